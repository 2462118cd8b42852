#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/heap.h"

static void pops_in_key_order(void **state)
{
	struct heap h;
	struct heap_node nodes[500];
	heap_init(&h);
	srand(7);
	for (int i = 0; i < 500; i++)
		assert_int_equal(heap_push(&h, &nodes[i], rand() % 1000), 0);
	int64_t last = -1;
	struct heap_node *n;
	int count = 0;
	while ((n = heap_top(&h))) {
		assert_true(n->key >= last);
		last = n->key;
		heap_remove(&h, n);
		assert_false(heap_node_queued(n));
		count++;
	}
	assert_int_equal(count, 500);
	heap_release(&h);
}

static void removes_from_the_middle(void **state)
{
	struct heap h;
	struct heap_node nodes[100];
	heap_init(&h);
	for (int i = 0; i < 100; i++)
		heap_push(&h, &nodes[i], (i * 37) % 100);
	for (int i = 0; i < 100; i += 2)
		heap_remove(&h, &nodes[i]);
	heap_remove(&h, &nodes[0]); /* removing twice is harmless */
	assert_int_equal(h.len, 50);
	int64_t last = -1;
	struct heap_node *n;
	while ((n = heap_top(&h))) {
		assert_true(n->key >= last);
		assert_true(((n - nodes) % 2) == 1);
		last = n->key;
		heap_remove(&h, n);
	}
	heap_release(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pops_in_key_order),
		cmocka_unit_test(removes_from_the_middle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
