/* Simulated devices and the --simulate spec. NVML lives in nvml.c. */
#include "daemon/sys/inventory.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bit: enough to spread (seed, index, memory) into stable UUID bits. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void simulated_uuid(char *out, size_t size, const char *seed, int index, uint64_t memory)
{
	uint64_t h1 = fnv1a(0xcbf29ce484222325ULL, seed, strlen(seed));
	h1 = fnv1a(h1, &index, sizeof(index));
	h1 = fnv1a(h1, &memory, sizeof(memory));
	uint64_t h2 = fnv1a(h1 ^ 0x5a5a5a5a5a5a5a5aULL, "zerogpu-sim", 11);
	/* Shaped like NVML's "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx". */
	snprintf(out, size, "GPU-%08x-%04x-%04x-%04x-%012llx", (unsigned) (h1 >> 32),
		 (unsigned) (h1 >> 16) & 0xffff, (unsigned) h1 & 0xffff, (unsigned) (h2 >> 48),
		 (unsigned long long) (h2 & 0xffffffffffffULL));
}

int inventory_parse_memory(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !(v > 0))
		return -EINVAL;
	uint64_t unit;
	if (!strcmp(end, "G") || !strcmp(end, "GB") || !strcmp(end, "GiB"))
		unit = 1ULL << 30;
	else if (!strcmp(end, "M") || !strcmp(end, "MB") || !strcmp(end, "MiB"))
		unit = 1ULL << 20;
	else
		return -EINVAL;
	if (v * (double) unit > (double) (1ULL << 50)) /* a petabyte GPU is a typo */
		return -EINVAL;
	*out = (uint64_t) (v * (double) unit);
	return 0;
}

int inventory_simulate(struct inventory *inv, const char *spec, const char *seed, char *err,
		       size_t errlen)
{
	memset(inv, 0, sizeof(*inv));
	inv->source = "simulated";
	if (!spec || !*spec) {
		snprintf(err, errlen, "empty --simulate spec: expected COUNTxMEMORY like 4x80G");
		return -EINVAL;
	}

	char buf[256];
	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errlen, "--simulate spec is too long (%zu characters, at most %zu)",
			 strlen(spec), sizeof(buf) - 1);
		return -EINVAL;
	}
	strcpy(buf, spec);

	char *save = NULL;
	for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *x = strchr(item, 'x');
		char *end = NULL;
		long count = x && isdigit((unsigned char) item[0]) ? strtol(item, &end, 10) : -1;
		uint64_t memory;
		if (!x || end != x || inventory_parse_memory(x + 1, &memory) < 0) {
			snprintf(err, errlen,
				 "bad --simulate item '%s': expected COUNTxMEMORY like 4x80G or "
				 "2x141G,1x80G",
				 item);
			return -EINVAL;
		}
		if (count < 1 || count > INV_MAX_DEVICES - (long) inv->count) {
			snprintf(
				err, errlen,
				"bad --simulate item '%s': the device count must be 1 to %d in all",
				item, INV_MAX_DEVICES);
			return -EINVAL;
		}
		for (long i = 0; i < count; i++) {
			struct device *d = &inv->devices[inv->count];
			d->index = d->gpu_index = d->node_minor = (int) inv->count;
			d->mig_index = d->gi_id = d->ci_id = -1;
			d->memory_bytes = memory;
			d->simulated = true;
			snprintf(d->name, sizeof(d->name), "Simulated GPU %.0fG",
				 (double) memory / (double) (1ULL << 30));
			simulated_uuid(d->uuid, sizeof(d->uuid), seed, d->index, memory);
			inv->count++;
		}
	}
	if (inv->count == 0) {
		snprintf(err, errlen, "--simulate spec '%s' names no devices", spec);
		return -EINVAL;
	}
	return 0;
}
