/* Visitor tokens: what is accepted, and each way a token is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "daemon/core/auth.h"

static const unsigned char secret[] = "correct horse battery staple";
#define SECRET secret, sizeof(secret) - 1
#define NOW    1795000000

static char *sign(const char *sub, enum lease_tier tier, int64_t exp)
{
	struct visitor_identity id = {.tier = tier, .exp = exp};
	strcpy(id.sub, sub);
	char *tok;
	assert_int_equal(auth_sign_visitor(&id, SECRET, &tok), 0);
	return tok;
}

static int verify(const char *tok, struct visitor_identity *out, char *err)
{
	return auth_verify_visitor(tok, SECRET, NOW, out, err, 256);
}

/* base64url without padding, by way of OpenSSL's plain base64. */
static void b64url(const unsigned char *in, size_t len, char *out)
{
	int n = EVP_EncodeBlock((unsigned char *) out, in, (int) len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (char *p = out; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

/* A token for any claims at all, signed as the daemon's tokens are. */
static char *sign_claims(const char *claims)
{
	static char tok[2048];
	const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	b64url((const unsigned char *) header, strlen(header), tok);
	strcat(tok, ".");
	b64url((const unsigned char *) claims, strlen(claims), tok + strlen(tok));
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned mac_len;
	HMAC(EVP_sha256(), SECRET, (const unsigned char *) tok, strlen(tok), mac, &mac_len);
	strcat(tok, ".");
	b64url(mac, mac_len, tok + strlen(tok));
	return tok;
}

static void accepts_a_good_token(void **state)
{
	char *tok = sign("alice", LEASE_TIER_PRO, NOW + 60);
	struct visitor_identity id;
	char err[256];
	assert_int_equal(verify(tok, &id, err), 0);
	assert_string_equal(id.sub, "alice");
	assert_int_equal(id.tier, LEASE_TIER_PRO);
	assert_int_equal(id.exp, NOW + 60);
	free(tok);
}

static void refuses_a_bad_signature_and_another_secret(void **state)
{
	char *tok = sign("alice", LEASE_TIER_PRO, NOW + 60);
	char err[256];
	struct visitor_identity id;
	tok[strlen(tok) - 2] ^= 1; /* flip a bit of the signature */
	assert_int_equal(verify(tok, &id, err), -13);
	assert_string_equal(err, "invalid visitor token: bad signature");
	tok[strlen(tok) - 2] ^= 1;
	const unsigned char other[] = "another secret";
	assert_int_equal(auth_verify_visitor(tok, other, sizeof(other) - 1, NOW, &id, err, 256),
			 -13);
	/* A changed claim breaks the signature too: pro -> enterprise by hand. */
	char *dot = strchr(tok, '.');
	dot[1] = dot[1] == 'e' ? 'f' : 'e';
	assert_int_equal(verify(tok, &id, err), -13);
	free(tok);
}

static void refuses_expired(void **state)
{
	char *tok = sign("bob", LEASE_TIER_FREE, NOW - 30);
	char err[256];
	struct visitor_identity id;
	assert_int_equal(verify(tok, &id, err), -13);
	assert_string_equal(err, "visitor token expired 30 s ago");
	free(tok);
}

static void refuses_alg_none_and_garbage(void **state)
{
	char err[256];
	struct visitor_identity id;
	/* {"alg":"none"} . {"sub":"x","tier":"pro","exp":9999999999} . (empty) */
	assert_int_equal(verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwidGllciI6InBybyIsImV4cCI6OTk5"
				"OTk5OTk5OX0.",
				&id, err),
			 -13);
	assert_string_equal(err, "invalid visitor token: the algorithm must be HS256");
	assert_int_equal(verify("not-a-token", &id, err), -13);
	assert_string_equal(err, "invalid visitor token: not a JWT (three base64url parts "
				 "separated by dots)");
	assert_int_equal(verify("a.b.c.d", &id, err), -13);
	assert_int_equal(verify("!!!.???.***", &id, err), -13);
}

static void refuses_missing_claims(void **state)
{
	char err[256];
	struct visitor_identity id;
	char *tok = sign("", LEASE_TIER_FREE, NOW + 60);
	assert_int_equal(verify(tok, &id, err), -13);
	assert_string_equal(
		err, "invalid visitor token: claim 'sub' is missing or not a string of 1-256 "
		     "bytes");
	free(tok);
}

static void refuses_a_non_canonical_signature(void **state)
{
	char *tok = sign("alice", LEASE_TIER_PRO, NOW + 60);
	struct visitor_identity id;
	char err[256];
	assert_int_equal(verify(tok, &id, err), 0);
	/* 32 bytes are 43 characters; the last one's two low bits carry nothing.
	 * Setting one spells the same signature another way: not accepted. */
	char *last = tok + strlen(tok) - 1;
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	*last = abc[(strchr(abc, *last) - abc) | 1];
	assert_int_equal(verify(tok, &id, err), -13);
	assert_string_equal(err, "invalid visitor token: bad signature");
	free(tok);
}

static void refuses_dates_out_of_range_or_not_yet_valid(void **state)
{
	struct visitor_identity id;
	char err[256], claims[256];
	/* An expiry past what int64 holds is refused, not cast. */
	assert_int_equal(
		verify(sign_claims("{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":1e300}"), &id, err),
		-13);
	assert_string_equal(err, "invalid visitor token: claim 'exp' (expiry, Unix seconds) is "
				 "missing or out of range");
	assert_int_equal(
		verify(sign_claims("{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":-5}"), &id, err), -13);
	assert_int_equal(
		verify(sign_claims("{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":\"soon\"}"), &id, err),
		-13);
	/* A fractional NumericDate is fine. */
	snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":%d.5}", NOW + 60);
	assert_int_equal(verify(sign_claims(claims), &id, err), 0);
	assert_int_equal(id.exp, NOW + 60);
	/* Not valid before: an hour ahead is refused, a few seconds of clock skew are not. */
	snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":%d,\"nbf\":%d}",
		 NOW + 7200, NOW + 3600);
	assert_int_equal(verify(sign_claims(claims), &id, err), -13);
	assert_string_equal(err, "visitor token is not valid for another 3600 s (nbf)");
	snprintf(claims, sizeof(claims),
		 "{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":%d,\"nbf\":%d,\"iat\":%d}", NOW + 60,
		 NOW + 5, NOW + 5);
	assert_int_equal(verify(sign_claims(claims), &id, err), 0);
	snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":%d,\"iat\":%d}",
		 NOW + 7200, NOW + 600);
	assert_int_equal(verify(sign_claims(claims), &id, err), -13);
	assert_string_equal(err, "visitor token was issued 600 s in the future (iat): check the "
				 "clocks");
	snprintf(claims, sizeof(claims),
		 "{\"sub\":\"a\",\"tier\":\"pro\",\"exp\":%d,\"nbf\":\"now\"}", NOW + 60);
	assert_int_equal(verify(sign_claims(claims), &id, err), -13);
	assert_string_equal(err, "invalid visitor token: claims 'nbf' and 'iat' must be Unix "
				 "seconds");
}

/* The visitor gateway's tokens carry the address it saw; tokens without one still hold. */
static void the_ip_claim_round_trips_and_is_optional(void **state)
{
	struct visitor_identity id = {.tier = LEASE_TIER_ANONYMOUS, .exp = NOW + 300};
	strcpy(id.sub, "ip:2001:db8::7");
	strcpy(id.ip, "2001:db8::7");
	char *tok, err[256];
	assert_int_equal(auth_sign_visitor(&id, SECRET, &tok), 0);
	struct visitor_identity out;
	assert_int_equal(verify(tok, &out, err), 0);
	assert_string_equal(out.sub, "ip:2001:db8::7");
	assert_string_equal(out.ip, "2001:db8::7");
	free(tok);
	tok = sign("alice", LEASE_TIER_PRO, NOW + 60);
	assert_int_equal(verify(tok, &out, err), 0);
	assert_string_equal(out.ip, "");
	free(tok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(accepts_a_good_token),
		cmocka_unit_test(the_ip_claim_round_trips_and_is_optional),
		cmocka_unit_test(refuses_a_bad_signature_and_another_secret),
		cmocka_unit_test(refuses_expired),
		cmocka_unit_test(refuses_alg_none_and_garbage),
		cmocka_unit_test(refuses_missing_claims),
		cmocka_unit_test(refuses_a_non_canonical_signature),
		cmocka_unit_test(refuses_dates_out_of_range_or_not_yet_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
