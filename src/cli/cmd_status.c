#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "zerogpu.h"

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "-";
}

/* The first 8 characters of a lease id: enough to tell leases apart on screen. */
static const char *short_id(const char *id, char *buf)
{
	snprintf(buf, 9, "%s", id);
	return buf;
}

/* The workers resident on device d, as "app:pid" items, into out. */
static void resident_list(json_t *d, char *out, size_t size)
{
	size_t k, n = 0;
	json_t *r;
	out[0] = '\0';
	json_array_foreach(json_object_get(d, "residents"), k, r)
	{
		int w = snprintf(out + n, size - n, "%s%s:%lld", k ? "," : "", str(r, "app"),
				 (long long) json_integer_value(json_object_get(r, "pid")));
		if (w < 0 || (size_t) w >= size - n)
			break;
		n += (size_t) w;
	}
}

static void gib(char *out, size_t size, json_t *o, const char *key)
{
	snprintf(out, size, "%.1f GiB",
		 (double) json_integer_value(json_object_get(o, key)) / (double) (1ULL << 30));
}

static void print_devices(json_t *devices)
{
	struct table t;
	table_init(&t, 8,
		   (const char *[]){"INDEX", "UUID", "NAME", "MEMORY", "FREE", "STATE", "LEASES",
				    "RESIDENTS"});
	size_t i;
	json_t *d;
	json_array_foreach(devices, i, d)
	{
		char index[16], mem[32], free_mem[32], lease[9], residents[128];
		snprintf(index, sizeof(index), "%lld",
			 (long long) json_integer_value(json_object_get(d, "index")));
		gib(mem, sizeof(mem), d, "memory_bytes");
		gib(free_mem, sizeof(free_mem), d, "memory_free_bytes");
		resident_list(d, residents, sizeof(residents));
		/* A device split in halves may have two holders: show them all. */
		char holders[64] = "";
		size_t k;
		json_t *id;
		json_array_foreach(json_object_get(d, "leases"), k, id)
		{
			size_t used = strlen(holders);
			snprintf(holders + used, sizeof(holders) - used, "%s%s", k ? "," : "",
				 short_id(json_string_value(id), lease));
		}
		table_add(&t, (const char *[]){index, str(d, "uuid"), str(d, "name"), mem, free_mem,
					       str(d, "state"), holders[0] ? holders : "-",
					       residents[0] ? residents : "-"});
	}
	table_print_free(&t);
}

static void device_list(json_t *lease, char *out, size_t size)
{
	size_t i, n = 0;
	json_t *d;
	out[0] = '\0';
	json_array_foreach(json_object_get(lease, "devices"), i, d)
	{
		int w = snprintf(out + n, size - n, "%s%lld", i ? "," : "",
				 (long long) json_integer_value(json_object_get(d, "index")));
		if (w < 0 || (size_t) w >= size - n)
			break;
		n += (size_t) w;
	}
	if (!out[0])
		snprintf(out, size, "-");
}

static void print_leases(json_t *leases)
{
	struct table t;
	table_init(&t, 8,
		   (const char *[]){"LEASE", "STATE", "APP", "VISITOR", "SIZE", "DEVICES",
				    "REMAINING", "PID"});
	size_t i;
	json_t *l;
	json_array_foreach(leases, i, l)
	{
		char id[9], devices[128], remaining[32], pid[16] = "-";
		device_list(l, devices, sizeof(devices));
		snprintf(remaining, sizeof(remaining), "%.1f s",
			 json_number_value(json_object_get(l, "remaining_s")));
		if (json_is_integer(json_object_get(l, "pid")))
			snprintf(pid, sizeof(pid), "%lld",
				 (long long) json_integer_value(json_object_get(l, "pid")));
		table_add(&t, (const char *[]){short_id(str(l, "id"), id), str(l, "state"),
					       str(l, "app"), str(l, "visitor"), str(l, "size"),
					       devices, remaining, pid});
	}
	table_print_free(&t);
}

static void print_queue(json_t *queue)
{
	struct table t;
	table_init(&t, 6, (const char *[]){"POS", "LEASE", "APP", "VISITOR", "GPUS", "WAITED"});
	size_t i;
	json_t *l;
	json_array_foreach(queue, i, l)
	{
		char pos[16], id[9], gpus[16], waited[32];
		snprintf(pos, sizeof(pos), "%lld",
			 (long long) json_integer_value(json_object_get(l, "position")));
		snprintf(gpus, sizeof(gpus), "%lld",
			 (long long) json_integer_value(json_object_get(l, "gpus")));
		snprintf(waited, sizeof(waited), "%.1f s",
			 json_number_value(json_object_get(l, "waited_s")));
		table_add(&t, (const char *[]){pos, short_id(str(l, "id"), id), str(l, "app"),
					       str(l, "visitor"), gpus, waited});
	}
	table_print_free(&t);
}

/* Whether the devices are gated, and when not, why: the operator's next step. */
static void print_gate(json_t *st)
{
	const char *gate = str(st, "gate");
	long long parked = json_integer_value(json_object_get(st, "parked"));
	if (strcmp(gate, "off") == 0)
		printf("devices not gated: %s\n\n", str(st, "gate_reason"));
	else if (parked)
		printf("devices gated (%s); %lld process(es) parked\n\n", gate, parked);
	else
		printf("devices gated (%s)\n\n", gate);
}

static int status_exec(const struct cli_globals *g, int argc, char **argv)
{
	if (cli_wants_help(&cmd_status, argc, argv))
		return 0;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else {
			fprintf(stderr, "zerogpu status: unknown argument '%s'\n%s", argv[i],
				cmd_status.usage);
			return 2;
		}
	}

	json_t *st;
	if (cli_request(g, "GET", "/v1/status", NULL, as_json, &st))
		return 1;
	if (as_json) {
		json_decref(st);
		return 0;
	}
	json_t *devices = json_object_get(st, "devices");
	json_t *leases = json_object_get(st, "leases");
	json_t *queue = json_object_get(st, "queue");
	json_t *ledger = json_object_get(st, "ledger");
	printf("zerogpud %s on node %s (%s ledger), %zu %s device(s), %zu lease(s), %zu "
	       "waiting, up %.0f s\n\n",
	       str(st, "version"), str(st, "node"), str(ledger, "backend"),
	       json_array_size(devices), str(st, "device_source"), json_array_size(leases),
	       json_array_size(queue), json_number_value(json_object_get(st, "uptime_s")));
	print_gate(st);
	print_devices(devices);
	if (json_array_size(leases)) {
		putchar('\n');
		print_leases(leases);
	}
	if (json_array_size(queue)) {
		putchar('\n');
		print_queue(queue);
	}
	json_decref(st);
	return 0;
}

const struct cli_command cmd_status = {
	.name = "status",
	.summary = "show devices, leases and the queue",
	.usage = "Usage: zerogpu [--socket PATH] status [--json]\n"
		 "Show the daemon's devices, the leases holding them and the requests waiting.\n"
		 "\n"
		 "  --json   print the daemon's status document (GET /v1/status) as it is\n",
	.exec = status_exec,
};
