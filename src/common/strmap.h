/*
 * An intrusive hash map from strings to items. Items embed a struct strmap_node
 * whose key points into the item (and so lives as long as it); the map never
 * copies or frees items. Chained buckets, grown at load factor 1.
 */
#ifndef ZGPU_COMMON_STRMAP_H
#define ZGPU_COMMON_STRMAP_H

#include <stddef.h>

struct strmap_node {
	const char *key;
	struct strmap_node *next;
};

struct strmap {
	struct strmap_node **buckets;
	size_t cap, len;
};

/* Returns 0 or -ENOMEM. */
int strmap_init(struct strmap *m);
/* Frees the buckets, not the items. */
void strmap_release(struct strmap *m);
struct strmap_node *strmap_find(const struct strmap *m, const char *key);
/* Makes room for one more item, so that the next insert cannot fail. 0 or -ENOMEM. */
int strmap_reserve(struct strmap *m);
/* Inserts n, whose key must not be in m yet. Returns 0 or -ENOMEM. */
int strmap_insert(struct strmap *m, struct strmap_node *n);
void strmap_remove(struct strmap *m, struct strmap_node *n);
/* Calls fn on every item; fn may remove the item it is given. */
void strmap_foreach(const struct strmap *m, void (*fn)(struct strmap_node *n, void *arg),
		    void *arg);

#define strmap_item(node, type, member) ((type *) ((char *) (node) -offsetof(type, member)))

#endif
