/*
 * ui_session — the dashboard's sign-in cookie on the TCP listener. A browser
 * cannot send a bearer token with an EventSource, so the admin token, given once
 * on the token page (or as ?token= in a link), becomes a cookie: its expiry and an
 * HMAC-SHA256 of it keyed by the admin token. The token itself never sits in the
 * browser, the cookie dies with its expiry or with a new admin token, and checking
 * it needs no server state.
 */
#ifndef ZGPU_DAEMON_UI_SESSION_H
#define ZGPU_DAEMON_UI_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UI_SESSION_COOKIE "zerogpu_ui"
#define UI_SESSION_S	  (12 * 3600) /* a sign-in lasts this long */
#define UI_SESSION_LEN	  (20 + 1 + 64 + 1)

/* Writes the cookie's value for a sign-in at now_s (Unix seconds) into out. */
void ui_session_make(const char *admin_token, int64_t now_s, char out[UI_SESSION_LEN]);
/* Whether value is a cookie this admin token made that has not expired at now_s. */
bool ui_session_valid(const char *admin_token, const char *value, int64_t now_s);
/* The value of the cookie named UI_SESSION_COOKIE in a Cookie header, into out; false if
 * there is none (or it is longer than any this module makes). */
bool ui_session_from_header(const char *cookie_header, char *out, size_t size);

#endif
