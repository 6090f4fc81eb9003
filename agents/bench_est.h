/*
 * bench_est: the EST half of `fleetgate-bench --mode est` (docs/benchmarks.md).
 *
 * C client threads, each with one libcurl easy handle (a kept-alive TLS
 * connection, TLS session reused), POST simpleenroll requests to the
 * gateway's EST front-end until M are done in all. Each request carries a
 * CSR of its own, made before the run (an EST retry of the same CSR is
 * answered from the stored job, which would measure a lookup, not an
 * enrollment), and a token with M uses as the HTTP Basic password.
 */
#ifndef FG_BENCH_EST_H
#define FG_BENCH_EST_H

#include <stddef.h>
#include <sys/types.h>

struct est_bench_results {
	long requests;
	int clients;                        /* threads, one connection each */
	long ok;                            /* 200 with a PKCS#7 certificate */
	long failed;
	double wall_s;
	double rate;                        /* enrollments per second */
	double p50_ms, p90_ms, p99_ms, max_ms;
	double gw_cpu_s;                    /* fleetgated utime+stime in the phase */
	double gw_cpu_per;                  /* ... per enrollment */
	double prep_s;                      /* CSR pool generation (not measured) */
	char first_err[512];
};

/* Run the EST phase against url (https://HOST:PORT/.well-known/est),
 * trusting cafile, with token. gw_pid is fleetgated (for its CPU time,
 * read from /proc). 0 (failures are counted in r), or -1 with err when the
 * phase could not run at all. */
int est_bench_run(const char *url, const char *cafile, const char *token, int clients,
		  long requests, pid_t gw_pid, struct est_bench_results *r, char *err,
		  size_t errlen);

#endif
