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

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "daemon/core/auth.h"

#define NOW 1800000000 /* 2027-01-15: a fixed clock, so a run replays */

static const unsigned char secret[] = "fuzzing-secret-0123456789abcdef0123456789";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t b64url(const unsigned char *in, size_t len, char *out)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = 0;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[n++] = abc[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[n++] = abc[(acc << (6 - bits)) & 63];
	return n;
}

/* header.payload.signature, HS256 under secret. */
static char *sign(const uint8_t *header, size_t hlen, const uint8_t *payload, size_t plen)
{
	char *tok = malloc(2 * (hlen + plen) + 64 + 3);
	if (!tok)
		return NULL;
	size_t n = b64url(header, hlen, tok);
	tok[n++] = '.';
	n += b64url(payload, plen, tok + n);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	HMAC(EVP_sha256(), secret, (int) sizeof(secret) - 1, (const unsigned char *) tok, n, mac,
	     &maclen);
	tok[n++] = '.';
	n += b64url(mac, maclen, tok + n);
	tok[n] = '\0';
	return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char *tok;
	if (data[0] & 1) {
		const uint8_t *nl = memchr(data + 1, '\n', size - 1);
		size_t hlen = nl ? (size_t) (nl - (data + 1)) : size - 1;
		const uint8_t *payload = nl ? nl + 1 : data + size;
		tok = sign(data + 1, hlen, payload, (size_t) (data + size - payload));
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
