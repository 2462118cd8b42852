/*
 * api — the protocol adapters' route tables, which main.c hands to the HTTP
 * layer: the native API (api_v1.c), the registry of accounts, apps and quotas
 * (api_registry.c), the hosted ZeroGPU device API that the `spaces` package
 * calls (api_spaces.c), the visitor gateway (api_gateway.c), the live event
 * stream (api_events.c) and the dashboard's pages (api_ui.c). Each adapter
 * parses, calls the lease service (or the registry's records), and renders;
 * none changes state by itself.
 */
#ifndef ZGPU_DAEMON_API_H
#define ZGPU_DAEMON_API_H

#include "daemon/http.h"

extern const struct route api_v1_routes[];
extern const struct route api_registry_routes[];
extern const struct route api_spaces_routes[];
extern const struct route api_gateway_routes[];
extern const struct route api_events_routes[];
extern const struct route api_ui_routes[];

#endif
