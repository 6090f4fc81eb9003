/*
 * fleet_scale.c: fleetgate-scale, the store at fleet size (docs/benchmarks.md
 * "Renewal storm" and "Dashboard queries"). A measurement, not a test.
 *
 *   fleetgate-scale --store FILE --certs N [--smoothing on|off] [--max-per-hour M] [--queries]
 *
 * Records N devices, each enrolled with one certificate of 30 days, all
 * issued within one hour (a mass-enrollment day), through the store calls
 * fleetgated makes: store_job_admit, then store_job_finish_cert with the
 * default renewal rule (2/3..5/6, earliest 1/2, no ceiling or M) or, with
 * --smoothing off, none (each agent then renews at 2/3 of the life less
 * its jitter). Prints the renewal load of the next 40 days as `fleetgate
 * renewals plan` computes it: the busiest hour and how many hours carry
 * renewals. With --queries, times the dashboard's queries on the result
 * (median of 5) next to a full read of the certificates' rows, the
 * baseline of the same run. The certificates' DER is 600 random bytes, the
 * size of a P-256 end-entity certificate, so that rows weigh what real
 * ones do.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "fg_util.h"
#include "fleet_json.h"
#include "store.h"

#define LIFE (30 * 86400)

static double now_ms(void)
{
	return (double)fg_mono_ns() / 1e6;
}

static int reply_cb(void *arg, const struct store_window *w, unsigned char **reply, size_t *len)
{
	(void)arg;
	(void)w;
	*reply = malloc(1);
	*len = 1;
	return *reply ? 0 : -1;
}

struct peak {
	double max, total;
	long busy;                /* hours with at least one renewal */
	int64_t at;
};

static int on_hour(void *arg, int64_t hour, double renewals, long expiring)
{
	struct peak *p = arg;
	(void)expiring;
	p->total += renewals;
	if (renewals >= 0.5)
		p->busy++;
	if (renewals > p->max) {
		p->max = renewals;
		p->at = hour;
	}
	return 0;
}

static int count_cb(void *arg, const struct store_device *d)
{
	(void)d;
	(*(long *)arg)++;
	return 0;
}

static int nop_group(void *arg, const char *g, long n, long a)
{
	(void)arg, (void)g, (void)n, (void)a;
	return 0;
}

static int nop_load(void *arg, int64_t h, double r, long e)
{
	(void)arg, (void)h, (void)r, (void)e;
	return 0;
}

static int nop_hourly(void *arg, int64_t h, const char *k, long n)
{
	(void)arg, (void)h, (void)k, (void)n;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "fleetgate-scale: %s: %s\n", what, err);
	exit(1);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "store", required_argument, NULL, 's' },
		{ "certs", required_argument, NULL, 'n' },
		{ "smoothing", required_argument, NULL, 'm' },
		{ "queries", no_argument, NULL, 'q' },
		{ "max-per-hour", required_argument, NULL, 'M' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	long n = 0, max_per_hour = 0;
	int smoothing = 1, queries = 0, c;
	char err[1024] = "";

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 's': path = optarg; break;
		case 'n': n = strtol(optarg, NULL, 10); break;
		case 'm': smoothing = strcmp(optarg, "off") != 0; break;
		case 'q': queries = 1; break;
		case 'M': max_per_hour = strtol(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	if (path == NULL || n < 1 || n > 10000000) {
		fprintf(stderr, "usage: fleetgate-scale --store FILE --certs 1..10000000 [--smoothing on|off] [--max-per-hour M] [--queries]\n"
				"(FILE must not exist: it is made for the run; put it on tmpfs to measure the store, not the disk)\n");
		return 2;
	}
	struct store *st = store_open(path, 1, err, sizeof err);
	if (st == NULL)
		die("open", err);

	const struct store_renewal_rule rule = { 2.0 / 3, 5.0 / 6, 1.0 / 2, max_per_hour };
	long over = 0;
	char tok_id[24], key[48], rid[40], dev[40], serial[41], group[16];
	unsigned char der[600];
	int64_t t0 = fg_now() / 3600 * 3600;
	if (store_token_add(st, "scale-token-hash", "g00", (int)(n < 2000000000L ? n : 2000000000L), t0 + 86400,
			    t0, tok_id, err, sizeof err) != 0)
		die("token", err);
	fg_random(der, sizeof der);
	double f0 = now_ms();
	for (long i = 0; i < n; i++) {
		struct store_admit a;
		struct store_cert ct;
		struct store_window w;
		unsigned char *reply = NULL;
		size_t len = 0;

		snprintf(key, sizeof key, "K%039ld", i);
		snprintf(rid, sizeof rid, "rid-%016lx", i);
		snprintf(dev, sizeof dev, "dev_%016lx", (unsigned long)i * 2654435761UL);
		snprintf(group, sizeof group, "g%02ld", i % 20);
		memset(&a, 0, sizeof a);
		a.request_id = rid;
		a.curve_key = key;
		a.kind = "enroll";
		a.slot = "default";
		a.backend = "local";
		a.params_json = "{}";
		a.token_hash = "scale-token-hash";
		a.device_id = dev;
		a.create_device = 1;
		a.group = group;
		a.hostname = dev;
		a.facts_json = "{\"os\":\"linux\"}";
		a.now = fg_now();
		int r = store_job_admit(st, &a, err, sizeof err);
		if (r != 0)
			die("admit", r > 0 ? "refused" : err);
		memset(&ct, 0, sizeof ct);
		snprintf(serial, sizeof serial, "%040lX", i + 1);
		fg_strlcpy(ct.serial_hex, serial, sizeof ct.serial_hex);
		fg_strlcpy(ct.device_id, dev, sizeof ct.device_id);
		strcpy(ct.slot, "default");
		strcpy(ct.backend, "local");
		fg_strlcpy(ct.request_id, rid, sizeof ct.request_id);
		snprintf(ct.subject, sizeof ct.subject, "CN=%s.fleet.test", dev);
		ct.not_before = t0 + (int64_t)((double)i * 3600 / (double)n);
		ct.not_after = ct.not_before + LIFE;
		ct.der = der;
		ct.der_len = sizeof der;
		if (store_job_finish_cert(st, key, rid, &ct, smoothing ? &rule : NULL, reply_cb, NULL, &reply, &len, &w,
					  "cert.issue", "{}", err, sizeof err) != 0)
			die("finish", err);
		over += w.over;
		free(reply);
	}
	double fill = now_ms() - f0;
	struct peak p = { 0, 0, 0, 0 };
	if (store_renewal_load(st, t0, 40 * 24, on_hour, &p, err, sizeof err) != 0)
		die("load", err);
	char at[32];
	printf("{\"certs\": %ld, \"smoothing\": %s, \"max_per_hour\": %ld, \"fill_s\": %.1f, \"renewals\": %.0f, "
	       "\"peak_hour_renewals\": %.1f, \"peak_hour\": \"%s\", \"hours_with_renewals\": %ld, \"over_ceiling\": %ld",
	       n, smoothing ? "true" : "false", max_per_hour, fill / 1000, p.total, p.max,
	       fg_time_iso(p.at, at, sizeof at), p.busy, over);
	if (queries) {
		static const char *const names[] = { "baseline_full_row_read", "summary", "groups",
						     "devices_first_page", "devices_middle_page",
						     "devices_group_state_page", "expiries_90d", "activity_24h",
						     "device_doc" };
		enum { NQ = sizeof names / sizeof names[0] };
		double t[NQ][5];
		char mid[40];
		snprintf(mid, sizeof mid, "dev_%016lx", (unsigned long)(n / 2) * 2654435761UL);
		sqlite3 *db = NULL;
		if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
			die("open read-only", sqlite3_errmsg(db));
		for (int rep = 0; rep < 5; rep++) {
			for (int q = 0; q < NQ; q++) {
				long cnt = 0, total = 0;
				json_t *j = NULL;
				double s0 = now_ms();
				int r = 0;
				switch (q) {
				case 0:
					r = sqlite3_exec(db, "SELECT sum(length(der)) FROM certificates", NULL, NULL, NULL);
					break;
				case 1:
					j = fj_summary(st, fg_now(), err, sizeof err);
					r = j == NULL;
					break;
				case 2: r = store_group_counts(st, nop_group, NULL, err, sizeof err); break;
				case 3: r = store_device_page(st, NULL, -1, "", 50, count_cb, &cnt, &total, err, sizeof err); break;
				case 4: r = store_device_page(st, NULL, -1, mid, 50, count_cb, &cnt, &total, err, sizeof err); break;
				case 5: r = store_device_page(st, "g07", 0, mid, 50, count_cb, &cnt, &total, err, sizeof err); break;
				case 6: r = store_renewal_load(st, t0, 90 * 24, nop_load, NULL, err, sizeof err); break;
				case 7: r = store_audit_hourly(st, fg_now() - 86400, nop_hourly, NULL, err, sizeof err); break;
				case 8: r = fj_device_doc(st, mid, fg_now(), &j, err, sizeof err) != 1; break;
				}
				t[q][rep] = now_ms() - s0;
				json_decref(j);
				if (r != 0)
					die(names[q], err[0] ? err : sqlite3_errmsg(db));
			}
		}
		sqlite3_close(db);
		printf(", \"query_ms\": {");
		for (int q = 0; q < NQ; q++) {
			qsort(t[q], 5, sizeof t[q][0], cmp_double);
			printf("%s\"%s\": %.2f", q ? ", " : "", names[q], t[q][2]);
		}
		printf("}");
	}
	printf("}\n");
	store_free(st);
	return 0;
}
