/* Unguessable identifiers: lease ids, allowTokens. */
#ifndef ZGPU_COMMON_RANDOM_HEX_H
#define ZGPU_COMMON_RANDOM_HEX_H

#include <stddef.h>

/*
 * Writes nbytes of kernel randomness as 2 * nbytes lowercase hex digits and a
 * NUL into out. Aborts when the kernel has no randomness to give: nothing
 * safe could be handed out then.
 */
void random_hex(char *out, size_t nbytes);

#endif
