#include "daemon/core/auth.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MAX 4096

/* How far the clocks of whoever signs tokens and of this daemon may differ. */
#define CLOCK_SKEW_S 60

/* A NumericDate claim (RFC 7519: seconds, maybe fractional) that fits: 0 .. year 300000. */
static bool numeric_date(const json_t *v, int64_t *out)
{
	if (!json_is_number(v))
		return false;
	double x = json_number_value(v);
	if (!(x >= 0 && x < 1e13))
		return false;
	*out = (int64_t) x;
	return true;
}

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/*
 * Decodes base64url without padding; returns the length, or -1 when malformed.
 * Only the canonical spelling is taken: the bits of the last character that
 * carry no data must be zero, or several strings would stand for one
 * signature (and a token could be changed without breaking it).
 */
static long b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	size_t n = 0;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value(in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned) v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= cap)
				return -1;
			out[n++] = (unsigned char) (acc >> bits);
		}
	}
	if (len % 4 == 1 || (acc & ((1u << bits) - 1)) != 0)
		return -1;
	return (long) n;
}

static size_t b64url_encode(const unsigned char *in, size_t len, char *out)
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
	if (bits)
		out[n++] = abc[(acc << (6 - bits)) & 63];
	out[n] = '\0';
	return n;
}

static int tier_parse(const char *s, enum lease_tier *out)
{
	for (int t = 0; t < LEASE__TIER_COUNT; t++) {
		if (strcmp(s, lease_tier_name((enum lease_tier) t)) == 0) {
			*out = (enum lease_tier) t;
			return 0;
		}
	}
	return -1;
}

static int refuse(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "invalid visitor token: %s", msg);
	return -EACCES;
}

static json_t *decode_json(const char *part, size_t len)
{
	unsigned char buf[TOKEN_MAX];
	long n = b64url_decode(part, len, buf, sizeof(buf));
	return n < 0 ? NULL
		     : json_loadb((const char *) buf, (size_t) n, JSON_REJECT_DUPLICATES, NULL);
}

int auth_verify_visitor(const char *token, const unsigned char *secret, size_t secret_len,
			int64_t now, struct visitor_identity *out, char *err, size_t errlen)
{
	size_t len = strlen(token);
	const char *dot1 = strchr(token, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (len > TOKEN_MAX || !dot1 || !dot2 || strchr(dot2 + 1, '.'))
		return refuse(err, errlen, "not a JWT (three base64url parts separated by dots)");

	json_t *header = decode_json(token, (size_t) (dot1 - token));
	const char *alg = json_string_value(json_object_get(header, "alg"));
	bool hs256 = alg && strcmp(alg, "HS256") == 0;
	json_decref(header);
	if (!hs256)
		return refuse(err, errlen, "the algorithm must be HS256");

	unsigned char sig[64], want[EVP_MAX_MD_SIZE];
	unsigned want_len = 0;
	long sig_len = b64url_decode(dot2 + 1, strlen(dot2 + 1), sig, sizeof(sig));
	if (!HMAC(EVP_sha256(), secret, (int) secret_len, (const unsigned char *) token,
		  (size_t) (dot2 - token), want, &want_len) ||
	    sig_len != (long) want_len || CRYPTO_memcmp(sig, want, want_len) != 0)
		return refuse(err, errlen, "bad signature");

	json_t *claims = decode_json(dot1 + 1, (size_t) (dot2 - dot1 - 1));
	const char *sub = json_string_value(json_object_get(claims, "sub"));
	const char *tier = json_string_value(json_object_get(claims, "tier"));
	json_t *nbf = json_object_get(claims, "nbf"), *iat = json_object_get(claims, "iat");
	int64_t exp, not_before = 0, issued = 0;
	int r = 0;
	if (!claims)
		r = refuse(err, errlen, "its claims are not JSON");
	else if (!sub || !*sub || strlen(sub) > LEASE_TEXT_MAX)
		r = refuse(err, errlen, "claim 'sub' is missing or not a string of 1-256 bytes");
	else if (!tier || tier_parse(tier, &out->tier) < 0)
		r = refuse(err, errlen, "claim 'tier' must be anonymous, free, pro or enterprise");
	else if (!numeric_date(json_object_get(claims, "exp"), &exp))
		r = refuse(err, errlen,
			   "claim 'exp' (expiry, Unix seconds) is missing or out of range");
	else if ((nbf && !numeric_date(nbf, &not_before)) || (iat && !numeric_date(iat, &issued)))
		r = refuse(err, errlen, "claims 'nbf' and 'iat' must be Unix seconds");
	else if (exp <= now) {
		snprintf(err, errlen, "visitor token expired %lld s ago", (long long) (now - exp));
		r = -EACCES;
	} else if (not_before > now + CLOCK_SKEW_S) {
		snprintf(err, errlen, "visitor token is not valid for another %lld s (nbf)",
			 (long long) (not_before - now));
		r = -EACCES;
	} else if (issued > now + CLOCK_SKEW_S) {
		snprintf(err, errlen,
			 "visitor token was issued %lld s in the future (iat): check "
			 "the clocks",
			 (long long) (issued - now));
		r = -EACCES;
	} else {
		const char *ip = json_string_value(json_object_get(claims, "ip"));
		snprintf(out->sub, sizeof(out->sub), "%s", sub);
		snprintf(out->ip, sizeof(out->ip), "%s",
			 ip && strlen(ip) < sizeof(out->ip) ? ip : "");
		out->exp = exp;
	}
	json_decref(claims);
	return r;
}

int auth_sign_parts(const char *header, size_t hlen, const char *payload, size_t plen,
		    const unsigned char *secret, size_t secret_len, char **out)
{
	char *tok = malloc(((hlen + plen) * 4) / 3 + 128);
	if (!tok)
		return -ENOMEM;
	size_t n = b64url_encode((const unsigned char *) header, hlen, tok);
	tok[n++] = '.';
	n += b64url_encode((const unsigned char *) payload, plen, tok + n);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned mac_len = 0;
	HMAC(EVP_sha256(), secret, (int) secret_len, (unsigned char *) tok, n, mac, &mac_len);
	tok[n++] = '.';
	b64url_encode(mac, mac_len, tok + n);
	*out = tok;
	return 0;
}

int auth_sign_visitor(const struct visitor_identity *id, const unsigned char *secret,
		      size_t secret_len, char **out)
{
	json_t *claims = json_pack("{s:s, s:s, s:I}", "sub", id->sub, "tier",
				   lease_tier_name(id->tier), "exp", (json_int_t) id->exp);
	if (claims && id->ip[0])
		json_object_set_new(claims, "ip", json_string(id->ip));
	char *payload = json_dumps(claims, JSON_COMPACT);
	json_decref(claims);
	if (!payload)
		return -ENOMEM;
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	int r = auth_sign_parts(header, sizeof(header) - 1, payload, strlen(payload), secret,
				secret_len, out);
	free(payload);
	return r;
}
