#include "common/strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a: short keys, few of them per bucket. */
static size_t bucket_of(const char *key, size_t cap)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *key; key++)
		h = (h ^ (unsigned char) *key) * 0x100000001b3ULL;
	return (size_t) h & (cap - 1);
}

static int grow(struct strmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	struct strmap_node **b = calloc(cap, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		for (struct strmap_node *n = m->buckets[i], *next; n; n = next) {
			next = n->next;
			size_t k = bucket_of(n->key, cap);
			n->next = b[k];
			b[k] = n;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->cap = cap;
	return 0;
}

int strmap_init(struct strmap *m)
{
	memset(m, 0, sizeof(*m));
	return grow(m);
}

void strmap_release(struct strmap *m)
{
	free(m->buckets);
	memset(m, 0, sizeof(*m));
}

struct strmap_node *strmap_find(const struct strmap *m, const char *key)
{
	if (!m->cap)
		return NULL;
	for (struct strmap_node *n = m->buckets[bucket_of(key, m->cap)]; n; n = n->next)
		if (strcmp(n->key, key) == 0)
			return n;
	return NULL;
}

int strmap_reserve(struct strmap *m)
{
	return m->len + 1 > m->cap ? grow(m) : 0;
}

int strmap_insert(struct strmap *m, struct strmap_node *n)
{
	if (strmap_reserve(m) < 0)
		return -ENOMEM;
	size_t k = bucket_of(n->key, m->cap);
	n->next = m->buckets[k];
	m->buckets[k] = n;
	m->len++;
	return 0;
}

void strmap_remove(struct strmap *m, struct strmap_node *n)
{
	if (!m->cap)
		return;
	struct strmap_node **p = &m->buckets[bucket_of(n->key, m->cap)];
	while (*p && *p != n)
		p = &(*p)->next;
	if (*p) {
		*p = n->next;
		m->len--;
	}
}

void strmap_foreach(const struct strmap *m, void (*fn)(struct strmap_node *n, void *arg), void *arg)
{
	for (size_t i = 0; i < m->cap; i++)
		for (struct strmap_node *n = m->buckets[i], *next; n; n = next) {
			next = n->next;
			fn(n, arg);
		}
}
