/*
 * fuzz_auth — visitor tokens (auth.c). The first byte picks what the rest is:
 * - even: a token as a visitor sends it, checked as is (the signature holds
 *   nearly nothing the fuzzer makes, so this reaches the splitting, the
 *   base64url decoding and the signature check);
 * - odd: a JWT header and payload (JSON text, split at the first newline),
 *   signed here with the daemon's secret, so the claims parser sees anything
 *   at all that a holder of the secret could send.
 * A token either verifies into an identity with a known tier or is refused
 * with a sentence.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/core/auth.h"

#define NOW 1800000000 /* 2027-01-15: a fixed clock, so a run replays */

static const unsigned char secret[] = "fuzzing-secret-0123456789abcdef0123456789";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char *tok = NULL;
	if (data[0] & 1) {
		const uint8_t *nl = memchr(data + 1, '\n', size - 1);
		size_t hlen = nl ? (size_t) (nl - (data + 1)) : size - 1;
		const uint8_t *payload = nl ? nl + 1 : data + size;
		if (auth_sign_parts((const char *) data + 1, hlen, (const char *) payload,
				    (size_t) (data + size - payload), secret, sizeof(secret) - 1,
				    &tok) < 0)
			return 0;
	} else {
		tok = malloc(size);
		if (tok) {
			memcpy(tok, data + 1, size - 1);
			tok[size - 1] = '\0';
		}
	}
	if (!tok)
		return 0;
	struct visitor_identity id;
	char err[512];
	if (auth_verify_visitor(tok, secret, sizeof(secret) - 1, NOW, &id, err, sizeof(err)) == 0) {
		assert(id.tier >= LEASE_TIER_ENTERPRISE && id.tier <= LEASE_TIER_ANONYMOUS);
		assert(id.exp > NOW - 60);
		assert(strlen(id.sub) <= LEASE_TEXT_MAX);
	} else {
		assert(err[0]);
	}
	free(tok);
	return 0;
}
