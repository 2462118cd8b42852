#include "trace.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strmap.h"

#define HEADER	     "arrival_s,app,visitor,tier,size,gpus,requested_s,actual_s"
#define HEADER_MODEL HEADER ",model_gib"

/* Interned names: each distinct name gets the next index. */
struct names {
	struct strmap map;
	struct name {
		struct strmap_node node;
		int index;
		char text[];
	} * *items;
	size_t len, cap;
};

static int intern(struct names *n, const char *text, size_t max)
{
	struct strmap_node *found = strmap_find(&n->map, text);
	if (found)
		return strmap_item(found, struct name, node)->index;
	if (strlen(text) > max)
		return -E2BIG;
	if (n->len == n->cap) {
		size_t cap = n->cap ? 2 * n->cap : 256;
		void *items = realloc(n->items, cap * sizeof(*n->items));
		if (!items)
			return -ENOMEM;
		n->items = items;
		n->cap = cap;
	}
	struct name *item = malloc(sizeof(*item) + strlen(text) + 1);
	if (!item)
		return -ENOMEM;
	strcpy(item->text, text);
	item->node.key = item->text;
	item->index = (int) n->len;
	if (strmap_insert(&n->map, &item->node) < 0) {
		free(item);
		return -ENOMEM;
	}
	n->items[n->len++] = item;
	return item->index;
}

static void names_free(struct names *n)
{
	for (size_t i = 0; i < n->len; i++)
		free(n->items[i]);
	free(n->items);
	strmap_release(&n->map);
}

static bool parse_seconds(const char *s, int64_t *ms)
{
	char *end;
	double x = strtod(s, &end);
	if (end == s || *end || !isfinite(x) || x < 0 || x > 1e9)
		return false;
	*ms = (int64_t) llround(x * 1000.0);
	return true;
}

static int bad(char *err, size_t errlen, const char *path, size_t line, const char *what)
{
	snprintf(err, errlen, "%s:%zu: %s", path, line, what);
	return -1;
}

/* One line of nfields (8, or 9 with model_gib) into c; the fields are split in place. */
static int parse_line(char *text, int nfields, struct call *c, struct names *apps,
		      struct names *visitors, const char **why)
{
	char *f[9];
	int n = 0;
	for (char *p = text; n < nfields; n++) {
		f[n] = p;
		p = strchr(p, ',');
		if (!p) {
			n++;
			break;
		}
		*p++ = '\0';
	}
	if (n != nfields) {
		*why = nfields == 8 ? "expected 8 fields: " HEADER
				    : "expected 9 fields: " HEADER_MODEL;
		return -1;
	}
	if (nfields == 9) {
		char *end;
		double gib = strtod(f[8], &end);
		if (end == f[8] || *end || !(gib > 0 && gib <= 1024)) {
			*why = "model_gib must be a size in GiB, more than 0 and at most 1024";
			return -1;
		}
		c->model_bytes = (uint64_t) (gib * (double) (UINT64_C(1) << 30));
	}
	int64_t gpus;
	if (!parse_seconds(f[0], &c->arrival_ms) || !parse_seconds(f[6], &c->requested_ms) ||
	    !parse_seconds(f[7], &c->actual_ms)) {
		*why = "arrival_s, requested_s and actual_s must be seconds >= 0";
		return -1;
	}
	if (c->requested_ms == 0) {
		*why = "requested_s must be greater than 0";
		return -1;
	}
	if (!strcmp(f[3], "anonymous"))
		c->tier = LEASE_TIER_ANONYMOUS;
	else if (!strcmp(f[3], "free"))
		c->tier = LEASE_TIER_FREE;
	else if (!strcmp(f[3], "pro"))
		c->tier = LEASE_TIER_PRO;
	else if (!strcmp(f[3], "enterprise"))
		c->tier = LEASE_TIER_ENTERPRISE;
	else {
		*why = "tier must be anonymous, free, pro or enterprise";
		return -1;
	}
	if (!strcmp(f[4], "large"))
		c->size = LEASE_SIZE_LARGE;
	else if (!strcmp(f[4], "xlarge"))
		c->size = LEASE_SIZE_XLARGE;
	else {
		*why = "size must be large or xlarge";
		return -1;
	}
	char *end;
	gpus = strtol(f[5], &end, 10);
	if (end == f[5] || *end || gpus < 1 || gpus > 8) {
		*why = "gpus must be 1 to 8";
		return -1;
	}
	c->gpus = (int) gpus;
	if ((c->app = intern(apps, f[1], LEASE_APP_MAX)) < 0 || !f[1][0]) {
		*why = "app must be 1 to 64 characters";
		return -1;
	}
	if ((c->visitor = intern(visitors, f[2], 47)) < 0 || !f[2][0]) {
		*why = "visitor must be 1 to 47 characters";
		return -1;
	}
	c->granted_ms = c->ended_ms = -1;
	return 0;
}

int trace_read(struct trace *t, const char *path, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	if (!f) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	struct names apps = {0}, visitors = {0};
	size_t cap = 0, lineno = 0;
	char line[512];
	int r = 0;
	if (strmap_init(&apps.map) < 0 || strmap_init(&visitors.map) < 0) {
		r = bad(err, errlen, path, 0, "out of memory");
		goto out;
	}
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n')
			line[--n] = '\0';
		if (n && line[n - 1] == '\r')
			line[--n] = '\0';
		if (lineno == 1) {
			if (strcmp(line, HEADER) && strcmp(line, HEADER_MODEL)) {
				r = bad(err, errlen, path, lineno,
					"the header must be " HEADER
					" (and optionally ,model_gib)");
				goto out;
			}
			t->has_models = strcmp(line, HEADER_MODEL) == 0;
			continue;
		}
		if (n == 0 || line[0] == '#')
			continue;
		if (t->ncalls == cap) {
			cap = cap ? 2 * cap : 4096;
			struct call *calls = realloc(t->calls, cap * sizeof(*calls));
			if (!calls) {
				r = bad(err, errlen, path, lineno, "out of memory");
				goto out;
			}
			t->calls = calls;
		}
		struct call *c = &t->calls[t->ncalls];
		memset(c, 0, sizeof(*c));
		const char *why;
		if (parse_line(line, t->has_models ? 9 : 8, c, &apps, &visitors, &why) < 0) {
			r = bad(err, errlen, path, lineno, why);
			goto out;
		}
		if (t->ncalls && c->arrival_ms < t->calls[t->ncalls - 1].arrival_ms) {
			r = bad(err, errlen, path, lineno, "arrivals must be in time order");
			goto out;
		}
		t->ncalls++;
	}
	if (lineno == 0)
		r = bad(err, errlen, path, 1, "empty file: the header must be " HEADER);
	t->napps = apps.len;
	t->nvisitors = visitors.len;
	t->apps = calloc(apps.len + 1, sizeof(*t->apps));
	t->visitors = calloc(visitors.len + 1, sizeof(*t->visitors));
	if (!r && (!t->apps || !t->visitors))
		r = bad(err, errlen, path, lineno, "out of memory");
	for (size_t i = 0; !r && i < apps.len; i++)
		strcpy(t->apps[i], apps.items[i]->text);
	for (size_t i = 0; !r && i < visitors.len; i++)
		strcpy(t->visitors[i], visitors.items[i]->text);
out:
	names_free(&apps);
	names_free(&visitors);
	if (f != stdin)
		fclose(f);
	if (r)
		trace_free(t);
	return r;
}

void trace_free(struct trace *t)
{
	free(t->calls);
	free(t->apps);
	free(t->visitors);
	memset(t, 0, sizeof(*t));
}
