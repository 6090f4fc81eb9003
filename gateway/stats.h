/*
 * stats: process-wide counters of fleetgated for /metrics.
 *
 * Lock-free (C11 atomics) so workers count without contention; a reader
 * (the HTTP side) gets a consistent-enough snapshot for Prometheus, which
 * only needs each counter to be monotonic. Backends are counted by their
 * index in the config (stats_init names them), results by enum.
 */
#ifndef FG_STATS_H
#define FG_STATS_H

#include <stddef.h>
#include <stdint.h>

#define STATS_MAX_BACKENDS 32

enum stats_result {
	STATS_OK,          /* issued */
	STATS_DENIED,      /* policy, lifecycle or CA refusal */
	STATS_PENDING,     /* the CA has it pending */
	STATS_BAD_REQUEST, /* malformed, bad CSR */
	STATS_UNAUTHORIZED,
	STATS_ERROR,       /* gateway or CA failure, retried */
	STATS_RESULT_MAX
};

/* Bucket upper bounds, seconds, of the enrollment latency histogram. */
#define STATS_LATENCY_BUCKETS 12
extern const double stats_latency_bounds[STATS_LATENCY_BUCKETS];

/* Name the backends (index = position); call once before the workers start. */
void stats_init(const char *const *backends, size_t n);

/* One enrollment or renewal request answered: its backend ("" when the
 * request never reached one), result and wall time. */
void stats_enroll(const char *backend, enum stats_result result, double seconds);
void stats_checkin(void);
void stats_policy_error(void);
/* a renewal window assigned above renewal.max_per_hour */
void stats_renewal_over_ceiling(void);
/* A policy reload: ok = 1 swapped in, 0 refused (the old policy serves on). */
void stats_policy_reload(int ok);

enum stats_signer_event {
	STATS_SIGNER_REFUSED,      /* the signer refused an object (outside the boundary) */
	STATS_SIGNER_UNAVAILABLE,  /* a signature was asked while the signer was down */
	STATS_SIGNER_RESTART,      /* a new signer process took over */
	STATS_SIGNER_EVENT_MAX
};
void stats_signer(enum stats_signer_event ev);

/* Prometheus text exposition (format 0.0.4) of every counter above into a
 * malloc'd string; NULL on out of memory. */
char *stats_prometheus(void);

#endif
