#include "common/heap.h"

#include <errno.h>
#include <stdlib.h>

void heap_init(struct heap *h)
{
	h->items = NULL;
	h->len = h->cap = 0;
}

void heap_release(struct heap *h)
{
	for (size_t i = 0; i < h->len; i++)
		h->items[i]->pos = 0;
	free(h->items);
	heap_init(h);
}

static void heap_place(struct heap *h, size_t i, struct heap_node *n)
{
	h->items[i] = n;
	n->pos = i + 1;
}

static void heap_sift_up(struct heap *h, size_t i)
{
	struct heap_node *n = h->items[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (h->items[parent]->key <= n->key)
			break;
		heap_place(h, i, h->items[parent]);
		i = parent;
	}
	heap_place(h, i, n);
}

static void heap_sift_down(struct heap *h, size_t i)
{
	struct heap_node *n = h->items[i];
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= h->len)
			break;
		if (child + 1 < h->len && h->items[child + 1]->key < h->items[child]->key)
			child++;
		if (n->key <= h->items[child]->key)
			break;
		heap_place(h, i, h->items[child]);
		i = child;
	}
	heap_place(h, i, n);
}

int heap_reserve(struct heap *h, size_t n)
{
	if (n <= h->cap)
		return 0;
	size_t cap = h->cap ? h->cap : 16;
	while (cap < n)
		cap *= 2;
	struct heap_node **items = realloc(h->items, cap * sizeof(*items));
	if (!items)
		return -ENOMEM;
	h->items = items;
	h->cap = cap;
	return 0;
}

int heap_push(struct heap *h, struct heap_node *n, int64_t key)
{
	if (heap_reserve(h, h->len + 1) < 0)
		return -ENOMEM;
	n->key = key;
	h->items[h->len++] = n;
	heap_sift_up(h, h->len - 1);
	return 0;
}

void heap_remove(struct heap *h, struct heap_node *n)
{
	if (n->pos == 0 || n->pos > h->len || h->items[n->pos - 1] != n)
		return;
	size_t i = n->pos - 1;
	n->pos = 0;
	struct heap_node *last = h->items[--h->len];
	if (i == h->len)
		return;
	heap_place(h, i, last);
	heap_sift_up(h, i);
	heap_sift_down(h, last->pos - 1);
}

struct heap_node *heap_top(const struct heap *h)
{
	return h->len ? h->items[0] : NULL;
}
