/*
 * libcheck — drives libzerogpu against a running zerogpud for test_library.py.
 *	libcheck SOCKET threads N CYCLES   N threads share one client, acquire/release
 *	libcheck SOCKET timeout MS         acquire with a client timeout (expects queueing)
 *	libcheck SOCKET progress           prints each queue event seen while waiting
 *	libcheck SOCKET errors             the error table
 * Prints one result line; exits 0 when the library behaved as documented.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zerogpu.h"

static zgpu_client *client;
static int cycles;

static void *cycle_thread(void *arg)
{
	long *failures = arg;
	zgpu_request req = ZGPU_REQUEST_INIT;
	req.duration_s = 10;
	for (int i = 0; i < cycles; i++) {
		zgpu_lease *l;
		double used = -1;
		if (zgpu_acquire(&l, client, &req, 30000, NULL, NULL) < 0 ||
		    zgpu_lease_device_count(l) != 1 || !zgpu_lease_device(l, 0)->uuid ||
		    zgpu_lease_device(l, 1) != NULL || strlen(zgpu_lease_id(l)) != 32) {
			fprintf(stderr, "acquire: %s\n", zgpu_last_error());
			(*failures)++;
			continue;
		}
		if (zgpu_release(client, l, false, &used) < 0 || used < 0) {
			fprintf(stderr, "release: %s\n", zgpu_last_error());
			(*failures)++;
		}
	}
	return NULL;
}

static void on_progress(const zgpu_event *ev, void *userdata)
{
	(void) userdata;
	printf("queued position=%d reason=%s\n", ev->position, ev->reason ? ev->reason : "-");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	if (zgpu_client_open(&client, argv[1]) < 0) {
		printf("open failed: %s\n", zgpu_last_error());
		return 1;
	}
	const char *mode = argv[2];
	int rc = 1;
	if (!strcmp(mode, "threads") && argc == 5) {
		int n = atoi(argv[3]);
		cycles = atoi(argv[4]);
		pthread_t th[64];
		long failures[64] = {0}, total = 0;
		for (int i = 0; i < n && i < 64; i++)
			pthread_create(&th[i], NULL, cycle_thread, &failures[i]);
		for (int i = 0; i < n && i < 64; i++) {
			pthread_join(th[i], NULL);
			total += failures[i];
		}
		printf("threads=%d cycles=%d failures=%ld\n", n, cycles, total);
		rc = total != 0;
	} else if (!strcmp(mode, "timeout") && argc == 4) {
		zgpu_request req = ZGPU_REQUEST_INIT;
		zgpu_lease *l = NULL;
		int r = zgpu_acquire(&l, client, &req, atoi(argv[3]), NULL, NULL);
		printf("result=%s message=%s\n", zgpu_err_name(r), zgpu_last_error());
		rc = r != ZGPU_ETIMEDOUT || l != NULL;
	} else if (!strcmp(mode, "progress")) {
		zgpu_request req = ZGPU_REQUEST_INIT;
		zgpu_lease *l;
		int r = zgpu_acquire(&l, client, &req, -1, on_progress, NULL);
		printf("result=%s\n", zgpu_err_name(r));
		if (r == 0)
			zgpu_release(client, l, false, NULL);
		rc = r != 0;
	} else if (!strcmp(mode, "errors")) {
		rc = 0;
		for (int e = 0; e >= -17; e--) {
			if (!strcmp(zgpu_err_name(e), "UNKNOWN") || !*zgpu_strerror(e))
				rc = 1;
			printf("%d %s %s\n", e, zgpu_err_name(e), zgpu_strerror(e));
		}
		printf("%s|%s\n", zgpu_err_name(-99), zgpu_strerror(-99));
	}
	zgpu_client_free(client);
	return rc;
}
