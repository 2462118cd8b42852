/*
 * registry — accounts, the apps they host, and app tokens. Accounts have a
 * kind (free, pro, org) that bounds how many apps they may host. An app's
 * token is shown once, when the app is added; the ledger keeps its SHA-256.
 */
#ifndef ZGPU_DAEMON_REGISTRY_H
#define ZGPU_DAEMON_REGISTRY_H

#include <stddef.h>

struct zgpud;

/* Which app token belongs to: 1 with its name in app, 0 when none, -errno on failure. */
int registry_app_for_token(struct zgpud *d, const char *token, char *app, size_t size);

#endif
