/* The string map under the lease, app and visitor tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/strmap.h"

struct item {
	char name[16];
	int value;
	struct strmap_node node;
};

static struct item items[1000];

static void drop_odd(struct strmap_node *n, void *arg)
{
	struct strmap *m = arg;
	if (strmap_item(n, struct item, node)->value % 2)
		strmap_remove(m, n);
}

static void insert_find_grow_remove(void **state)
{
	struct strmap m;
	assert_int_equal(strmap_init(&m), 0);
	for (int i = 0; i < 1000; i++) {
		snprintf(items[i].name, sizeof(items[i].name), "key-%d", i);
		items[i].value = i;
		items[i].node.key = items[i].name;
		assert_int_equal(strmap_insert(&m, &items[i].node), 0);
	}
	assert_int_equal(m.len, 1000);
	assert_true(m.cap >= 1000); /* grew past its first 64 buckets */
	for (int i = 0; i < 1000; i += 97) {
		char key[16];
		snprintf(key, sizeof(key), "key-%d", i);
		struct strmap_node *n = strmap_find(&m, key);
		assert_non_null(n);
		assert_int_equal(strmap_item(n, struct item, node)->value, i);
	}
	assert_null(strmap_find(&m, "key-1000"));
	strmap_foreach(&m, drop_odd, &m); /* removing while iterating is allowed */
	assert_int_equal(m.len, 500);
	assert_null(strmap_find(&m, "key-3"));
	assert_non_null(strmap_find(&m, "key-4"));
	strmap_remove(&m, &items[3].node); /* already gone: a no-op */
	assert_int_equal(m.len, 500);
	strmap_release(&m);
	assert_null(strmap_find(&m, "key-4"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(insert_find_grow_remove),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
