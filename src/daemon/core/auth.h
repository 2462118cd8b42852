/*
 * auth — who a visitor is. Apps forward the visitor's token, a JWT signed with
 * HMAC-SHA256 under the daemon's visitor secret, with claims `sub` (who),
 * `tier` (anonymous, free, pro, enterprise) and `exp` (Unix seconds). Pure:
 * the time is passed in.
 */
#ifndef ZGPU_DAEMON_CORE_AUTH_H
#define ZGPU_DAEMON_CORE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/core/lease.h"

struct visitor_identity {
	char sub[LEASE_TEXT_MAX + 1];
	enum lease_tier tier;
	int64_t exp; /* Unix seconds */
	char ip[64]; /* claim `ip`: the address the visitor gateway saw; "" when absent */
};

/*
 * Checks token against secret at time now (Unix seconds). Returns 0 and fills
 * *out, or -EACCES with a sentence in err: malformed token (base64url other
 * than the canonical spelling included), an algorithm other than HS256
 * (`none` included), a bad signature, missing or wrong claims, expiry, or a
 * token not valid yet (`nbf`, `iat` later than now, give or take a minute of
 * clock skew).
 */
int auth_verify_visitor(const char *token, const unsigned char *secret, size_t secret_len,
			int64_t now, struct visitor_identity *out, char *err, size_t errlen);

/*
 * Signs a header and a payload, JSON text as given (hlen and plen bytes, checked for
 * nothing), into header.payload.signature (HS256 under secret): what a holder of the
 * secret could send, for the fuzz target of the claims parser. *out is malloc'd.
 * 0 or -ENOMEM.
 */
int auth_sign_parts(const char *header, size_t hlen, const char *payload, size_t plen,
		    const unsigned char *secret, size_t secret_len, char **out);

/* Makes a token (for tests and `zerogpu token`); *out is malloc'd. 0 or -ENOMEM. */
int auth_sign_visitor(const struct visitor_identity *id, const unsigned char *secret,
		      size_t secret_len, char **out);

#endif
