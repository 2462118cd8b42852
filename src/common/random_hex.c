#include "common/random_hex.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

void random_hex(char *out, size_t nbytes)
{
	unsigned char bytes[64];
	if (nbytes > sizeof(bytes))
		abort();
	size_t got = 0;
	while (got < nbytes) {
		ssize_t n = getrandom(bytes + got, nbytes - got, 0);
		if (n > 0)
			got += (size_t) n;
		else if (errno != EINTR)
			abort();
	}
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < nbytes; i++) {
		out[2 * i] = hex[bytes[i] >> 4];
		out[2 * i + 1] = hex[bytes[i] & 15];
	}
	out[2 * nbytes] = '\0';
}
