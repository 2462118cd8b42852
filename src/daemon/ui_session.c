#include "daemon/ui_session.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* HMAC-SHA256(admin_token, "zerogpu dashboard until EXPIRY") in hex. */
static void mac_hex(const char *admin_token, int64_t expiry_s, char out[65])
{
	char msg[64];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	int n = snprintf(msg, sizeof(msg), "zerogpu dashboard until %" PRId64, expiry_s);
	HMAC(EVP_sha256(), admin_token, (int) strlen(admin_token), (const unsigned char *) msg,
	     (size_t) n, mac, &len);
	for (unsigned int i = 0; i < len && i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
	out[64] = '\0';
}

void ui_session_make(const char *admin_token, int64_t now_s, char out[UI_SESSION_LEN])
{
	char mac[65];
	int64_t expiry = now_s + UI_SESSION_S;
	mac_hex(admin_token, expiry, mac);
	snprintf(out, UI_SESSION_LEN, "%" PRId64 ".%s", expiry, mac);
}

bool ui_session_valid(const char *admin_token, const char *value, int64_t now_s)
{
	char *end;
	char mac[65];
	if (!admin_token[0] || value[0] < '0' || value[0] > '9')
		return false;
	long long expiry = strtoll(value, &end, 10);
	if (*end != '.' || strlen(end + 1) != 64 || expiry <= now_s ||
	    expiry > now_s + UI_SESSION_S)
		return false;
	mac_hex(admin_token, expiry, mac);
	return CRYPTO_memcmp(mac, end + 1, 64) == 0;
}

bool ui_session_from_header(const char *h, char *out, size_t size)
{
	static const char name[] = UI_SESSION_COOKIE "=";
	/* "a=1; zerogpu_ui=VALUE; b=2": the pairs are separated by "; ". */
	for (const char *p = h; p && *p;) {
		while (*p == ' ' || *p == ';')
			p++;
		size_t len = strcspn(p, ";");
		if (strncmp(p, name, sizeof(name) - 1) == 0) {
			size_t vlen = len - (sizeof(name) - 1);
			if (vlen >= size)
				return false;
			memcpy(out, p + sizeof(name) - 1, vlen);
			out[vlen] = '\0';
			return true;
		}
		p += len;
	}
	return false;
}
