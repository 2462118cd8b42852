/*
 * An intrusive binary min-heap. Items embed a struct heap_node; the heap keeps
 * each node's position so that any item can be removed or re-keyed in O(log n).
 */
#ifndef ZGPU_COMMON_HEAP_H
#define ZGPU_COMMON_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct heap_node {
	int64_t key;
	size_t pos; /* index in the heap + 1; 0 when not in a heap */
};

struct heap {
	struct heap_node **items;
	size_t len, cap;
};

void heap_init(struct heap *h);
void heap_release(struct heap *h);
/* Makes room for n items in all, so that pushes up to that many cannot fail. 0 or -ENOMEM. */
int heap_reserve(struct heap *h, size_t n);
/* Inserts n with key; n must not be in a heap. Returns 0 or -ENOMEM. */
int heap_push(struct heap *h, struct heap_node *n, int64_t key);
/* Removes n if it is in h; a no-op otherwise. */
void heap_remove(struct heap *h, struct heap_node *n);
/* The node with the least key, or NULL when empty. */
struct heap_node *heap_top(const struct heap *h);

static inline bool heap_node_queued(const struct heap_node *n)
{
	return n->pos != 0;
}

#endif
