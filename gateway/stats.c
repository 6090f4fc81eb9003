/*
 * stats.c: see stats.h.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

const double stats_latency_bounds[STATS_LATENCY_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
};

static const char *const result_names[STATS_RESULT_MAX] = {
	"ok", "denied", "pending", "bad_request", "unauthorized", "error",
};

/* index STATS_MAX_BACKENDS counts requests without a backend */
static char backend_names[STATS_MAX_BACKENDS][64];
static size_t nbackends;
static atomic_uint_fast64_t enrolls[STATS_MAX_BACKENDS + 1][STATS_RESULT_MAX];
static atomic_uint_fast64_t latency_buckets[STATS_LATENCY_BUCKETS + 1]; /* last: +Inf */
static atomic_uint_fast64_t latency_sum_us;
static atomic_uint_fast64_t checkins, policy_errors, reloads_ok, reloads_failed, renewal_over;
static atomic_uint_fast64_t signer_refused, signer_unavailable, signer_restarts;

void stats_init(const char *const *backends, size_t n)
{
	nbackends = n < STATS_MAX_BACKENDS ? n : STATS_MAX_BACKENDS;
	for (size_t i = 0; i < nbackends; i++)
		snprintf(backend_names[i], sizeof backend_names[i], "%s", backends[i]);
}

static size_t backend_index(const char *b)
{
	for (size_t i = 0; b && *b && i < nbackends; i++)
		if (strcmp(backend_names[i], b) == 0)
			return i;
	return STATS_MAX_BACKENDS;
}

void stats_enroll(const char *backend, enum stats_result result, double seconds)
{
	if ((unsigned)result >= STATS_RESULT_MAX)
		result = STATS_ERROR;
	atomic_fetch_add_explicit(&enrolls[backend_index(backend)][result], 1, memory_order_relaxed);
	size_t b = 0;
	while (b < STATS_LATENCY_BUCKETS && seconds > stats_latency_bounds[b])
		b++;
	atomic_fetch_add_explicit(&latency_buckets[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&latency_sum_us, (uint_fast64_t)(seconds * 1e6), memory_order_relaxed);
}

void stats_checkin(void)
{
	atomic_fetch_add_explicit(&checkins, 1, memory_order_relaxed);
}

void stats_renewal_over_ceiling(void)
{
	atomic_fetch_add_explicit(&renewal_over, 1, memory_order_relaxed);
}

void stats_policy_error(void)
{
	atomic_fetch_add_explicit(&policy_errors, 1, memory_order_relaxed);
}

void stats_policy_reload(int ok)
{
	atomic_fetch_add_explicit(ok ? &reloads_ok : &reloads_failed, 1, memory_order_relaxed);
}

void stats_signer(enum stats_signer_event ev)
{
	atomic_uint_fast64_t *c = ev == STATS_SIGNER_REFUSED ? &signer_refused
				  : ev == STATS_SIGNER_UNAVAILABLE ? &signer_unavailable
								   : &signer_restarts;
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static unsigned long long get(atomic_uint_fast64_t *a)
{
	return (unsigned long long)atomic_load_explicit(a, memory_order_relaxed);
}

char *stats_prometheus(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return NULL;
	fprintf(f, "# HELP fleetgate_enrollments_total Enrollment and renewal requests answered, by backend and result.\n"
		   "# TYPE fleetgate_enrollments_total counter\n");
	for (size_t i = 0; i <= nbackends; i++) {
		size_t idx = i < nbackends ? i : STATS_MAX_BACKENDS;
		for (int r = 0; r < STATS_RESULT_MAX; r++)
			fprintf(f, "fleetgate_enrollments_total{backend=\"%s\",result=\"%s\"} %llu\n",
				i < nbackends ? backend_names[i] : "", result_names[r], get(&enrolls[idx][r]));
	}
	fprintf(f, "# HELP fleetgate_enrollment_duration_seconds Time from request to answer.\n"
		   "# TYPE fleetgate_enrollment_duration_seconds histogram\n");
	unsigned long long cum = 0;
	for (int b = 0; b < STATS_LATENCY_BUCKETS; b++) {
		cum += get(&latency_buckets[b]);
		fprintf(f, "fleetgate_enrollment_duration_seconds_bucket{le=\"%g\"} %llu\n",
			stats_latency_bounds[b], cum);
	}
	cum += get(&latency_buckets[STATS_LATENCY_BUCKETS]);
	fprintf(f, "fleetgate_enrollment_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
	fprintf(f, "fleetgate_enrollment_duration_seconds_sum %.6f\n", (double)get(&latency_sum_us) / 1e6);
	fprintf(f, "fleetgate_enrollment_duration_seconds_count %llu\n", cum);
	fprintf(f, "# HELP fleetgate_checkins_total Check-ins answered.\n# TYPE fleetgate_checkins_total counter\n"
		   "fleetgate_checkins_total %llu\n", get(&checkins));
	fprintf(f, "# HELP fleetgate_renewal_windows_over_ceiling_total Renewal windows assigned above renewal.max_per_hour.\n"
		   "# TYPE fleetgate_renewal_windows_over_ceiling_total counter\nfleetgate_renewal_windows_over_ceiling_total %llu\n",
		get(&renewal_over));
	fprintf(f, "# HELP fleetgate_policy_errors_total Policy calls that failed (error, loop, memory).\n"
		   "# TYPE fleetgate_policy_errors_total counter\nfleetgate_policy_errors_total %llu\n",
		get(&policy_errors));
	fprintf(f, "# HELP fleetgate_policy_reloads_total Policy reloads, by result.\n"
		   "# TYPE fleetgate_policy_reloads_total counter\n"
		   "fleetgate_policy_reloads_total{result=\"ok\"} %llu\n"
		   "fleetgate_policy_reloads_total{result=\"refused\"} %llu\n",
		get(&reloads_ok), get(&reloads_failed));
	fprintf(f, "# HELP fleetgate_signer_refusals_total Objects the signer process refused to sign (outside the issuance boundary).\n"
		   "# TYPE fleetgate_signer_refusals_total counter\nfleetgate_signer_refusals_total %llu\n"
		   "# HELP fleetgate_signer_unavailable_total Signatures asked while the signer process was down (retried).\n"
		   "# TYPE fleetgate_signer_unavailable_total counter\nfleetgate_signer_unavailable_total %llu\n"
		   "# HELP fleetgate_signer_restarts_total Signer processes started after the first.\n"
		   "# TYPE fleetgate_signer_restarts_total counter\nfleetgate_signer_restarts_total %llu\n",
		get(&signer_refused), get(&signer_unavailable), get(&signer_restarts));
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
