/*
 * fleetgate-bench: enrollment throughput, latency and gateway CPU cost.
 *
 *   fleetgate-bench [--agents N] [--requests M] [--workers W] [--json] [--keep]
 *                   [--bin-dir DIR]
 *
 * It makes a fresh gateway (fleetgate init in a temp dir, local P-256 CA,
 * SQLite), starts fleetgated, and runs N simulated agents, each with its own
 * CURVE key and DEALER socket, from one client thread. Every agent first
 * enrolls with a shared token (binding its key); then, measured, the agents
 * keep enrolling (new request ids, no token) until M enrollments are done.
 * Agent-side crypto is excluded (CSRs come from a pre-made pool).
 *
 * Reported: enrollments/s, latency percentiles, the gateway's CPU-seconds per
 * enrollment (utime+stime of fleetgated from /proc) and, measured in the same
 * run on this machine, the bare crypto cost of one enrollment (one P-256 CSR
 * verification and one P-256 certificate signature) and their ratio.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"

#define POOL 64

struct sim {
	void *sock;
	char rid[33];
	uint64_t sent_ns;
	int busy;
	char host[32];
};

static char bindir[PATH_MAX];

static int run(const char *cmd)
{
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static double proc_cpu(pid_t pid)
{
	char path[64], buf[2048];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = 0;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The bare cost of one enrollment's crypto: verify a P-256 CSR and sign a
 * P-256 certificate, single thread, CPU time. */
static double bare_crypto(int iters, unsigned char *csr, size_t csr_len)
{
	char err[256];
	EVP_PKEY *ca = fg_key_generate(FG_KEY_P256, err, sizeof err);
	const unsigned char *p = csr;
	X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)csr_len);
	X509 *x = X509_new();
	X509_NAME *nm = X509_NAME_new();
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"bench", -1, -1, 0);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 12345);
	X509_set_subject_name(x, nm);
	X509_set_issuer_name(x, nm);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, X509_REQ_get0_pubkey(req));
	double t0 = thread_cpu();
	for (int i = 0; i < iters; i++) {
		if (X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1 || X509_sign(x, ca, EVP_sha256()) <= 0)
			return -1;
	}
	double per = (thread_cpu() - t0) / iters;
	X509_NAME_free(nm);
	X509_free(x);
	X509_REQ_free(req);
	EVP_PKEY_free(ca);
	return per;
}

static int send_enroll(struct sim *s, const char *token, unsigned char *csr, size_t csr_len)
{
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__EnrollRequest er = FLEETGATE__ENROLL_REQUEST__INIT;
	Fleetgate__Facts f = FLEETGATE__FACTS__INIT;
	uint8_t *buf;
	size_t len;
	fg_request_id_new(s->rid);
	f.hostname = s->host;
	f.secure_boot = -1;
	er.slot = (char *)"bench";
	er.csr_der.data = csr;
	er.csr_der.len = csr_len;
	er.token = (char *)token;
	er.facts = &f;
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = s->rid;
	env.body_case = FLEETGATE__ENVELOPE__BODY_ENROLL;
	env.enroll = &er;
	if (fg_wire_pack(&env, &buf, &len) != 0)
		return -1;
	s->sent_ns = fg_mono_ns();
	int rc = zmq_send(s->sock, buf, len, 0) < 0 ? -1 : 0;
	free(buf);
	s->busy = rc == 0;
	return rc;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Drive requests until `total` replies arrived; fills lat (ns) when given.
 * Returns the number of failed replies (status not OK) or timeouts. */
static long drive(struct sim *sims, int n, long total, const char *token, unsigned char **csrs,
		  size_t *csr_lens, uint64_t *lat, char *first_err, size_t errlen)
{
	zmq_pollitem_t *items = calloc((size_t)n, sizeof *items);
	long sent = 0, got = 0, failed = 0;
	for (int i = 0; i < n; i++) {
		items[i].socket = sims[i].sock;
		items[i].events = ZMQ_POLLIN;
	}
	for (int i = 0; i < n && sent < total; i++)
		if (send_enroll(&sims[i], token, csrs[i % POOL], csr_lens[i % POOL]) == 0)
			sent++;
	while (got < total) {
		int r = zmq_poll(items, n, 30000);
		if (r == 0) {
			failed += sent - got;
			snprintf(first_err, errlen, "timeout: no reply within 30 s");
			break;
		}
		for (int i = 0; i < n; i++) {
			if (!(items[i].revents & ZMQ_POLLIN))
				continue;
			zmq_msg_t m;
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, sims[i].sock, ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&m);
				continue;
			}
			uint64_t now = fg_mono_ns();
			char err[256];
			Fleetgate__Envelope *env = fg_wire_unpack(zmq_msg_data(&m), zmq_msg_size(&m), 1 << 20,
								  err, sizeof err);
			zmq_msg_close(&m);
			if (env == NULL || strcmp(env->request_id, sims[i].rid) != 0) {
				fg_wire_free(env);
				continue;
			}
			int ok = env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY &&
				 env->cert_reply->status == FLEETGATE__STATUS__STATUS_OK &&
				 env->cert_reply->cert_der.len > 0;
			if (!ok) {
				failed++;
				if (!first_err[0])
					snprintf(first_err, errlen, "%s", env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY
						 ? env->cert_reply->message : "unexpected reply");
			}
			fg_wire_free(env);
			if (lat)
				lat[got] = now - sims[i].sent_ns;
			got++;
			sims[i].busy = 0;
			if (sent < total && send_enroll(&sims[i], "", csrs[(i + got) % POOL],
							csr_lens[(i + got) % POOL]) == 0)
				sent++;
		}
	}
	free(items);
	return failed;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "agents", required_argument, NULL, 'a' },
		{ "requests", required_argument, NULL, 'r' },
		{ "workers", required_argument, NULL, 'w' },
		{ "bin-dir", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "keep", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int nagents = 100, workers = 2, json = 0, keep = 0, c;
	long nreq = 2000;
	char dir[] = "/tmp/fleetgate-bench.XXXXXX", cmd[8192], err[512] = "", key[64] = "";

	while ((c = getopt_long(argc, argv, "a:r:w:b:jkh", opts, NULL)) != -1) {
		switch (c) {
		case 'a': nagents = atoi(optarg); break;
		case 'r': nreq = atol(optarg); break;
		case 'w': workers = atoi(optarg); break;
		case 'b': fg_strlcpy(bindir, optarg, sizeof bindir); break;
		case 'j': json = 1; break;
		case 'k': keep = 1; break;
		case 'h':
			printf("usage: fleetgate-bench [--agents N] [--requests M] [--workers W] [--json] [--keep] [--bin-dir DIR]\n");
			return 0;
		default: return 2;
		}
	}
	if (nagents < 1 || nagents > 20000 || nreq < 1 || workers < 1 || workers > 64) {
		fprintf(stderr, "fleetgate-bench: --agents 1..20000, --requests >= 1, --workers 1..64\n");
		return 2;
	}
	if (bindir[0] == '\0') {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n <= 0)
			return 2;
		exe[n] = '\0';
		snprintf(bindir, sizeof bindir, "%s/../gateway", dirname(exe));
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	unsigned short port = (unsigned short)(20000 + (getpid() % 30000));
	snprintf(cmd, sizeof cmd, "'%s/fleetgate' init --state '%s/gw' --listen tcp://127.0.0.1:%u >/dev/null &&"
		 " sed -i 's/^workers = .*/workers = %d/' '%s/gw/fleetgated.conf'",
		 bindir, dir, port, workers, dir);
	if (run(cmd) != 0) {
		fprintf(stderr, "fleetgate-bench: fleetgate init failed (binaries in %s?)\n", bindir);
		return 1;
	}
	snprintf(cmd, sizeof cmd, "%s/gw/keys/gateway.pub", dir);
	FILE *f = fopen(cmd, "r");
	if (f == NULL || fscanf(f, "public = %40s", key) != 1) {
		fprintf(stderr, "fleetgate-bench: cannot read the gateway key\n");
		return 1;
	}
	fclose(f);

	pid_t gw = fork();
	if (gw == 0) {
		char state[PATH_MAX], bin[PATH_MAX + 16], log[PATH_MAX];
		snprintf(state, sizeof state, "%s/gw", dir);
		snprintf(bin, sizeof bin, "%s/fleetgated", bindir);
		snprintf(log, sizeof log, "%s/fleetgated.log", dir);
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0)
			dup2(fd, 2);
		execl(bin, bin, "--state", state, "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	usleep(300000);

	char token[64] = "";
	snprintf(cmd, sizeof cmd, "'%s/fleetgate' token create --state '%s/gw' --group bench --uses %d --ttl 1h 2>/dev/null",
		 bindir, dir, nagents);
	FILE *p = popen(cmd, "r");
	if (p == NULL || fscanf(p, "%63s", token) != 1) {
		fprintf(stderr, "fleetgate-bench: cannot create a token\n");
		kill(gw, SIGTERM);
		return 1;
	}
	pclose(p);

	unsigned char *csrs[POOL];
	size_t csr_lens[POOL];
	for (int i = 0; i < POOL; i++) {
		EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, sizeof err);
		char cn[32];
		snprintf(cn, sizeof cn, "bench-%d", i);
		const char *dns[1] = { cn };
		if (k == NULL || fg_csr_build(k, cn, dns, 1, &csrs[i], &csr_lens[i], err, sizeof err) != 0) {
			fprintf(stderr, "fleetgate-bench: %s\n", err);
			return 1;
		}
		EVP_PKEY_free(k);
	}

	void *ctx = zmq_ctx_new();
	zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, nagents + 16);
	struct sim *sims = calloc((size_t)nagents, sizeof *sims);
	char ep[64];
	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%u", port);
	for (int i = 0; i < nagents; i++) {
		char pub[41], sec[41];
		int linger = 0;
		zmq_curve_keypair(pub, sec);
		sims[i].sock = zmq_socket(ctx, ZMQ_DEALER);
		if (sims[i].sock == NULL) {
			fprintf(stderr, "fleetgate-bench: socket %d: %s\n", i, zmq_strerror(zmq_errno()));
			return 1;
		}
		snprintf(sims[i].host, sizeof sims[i].host, "bench-%d", i);
		zmq_setsockopt(sims[i].sock, ZMQ_LINGER, &linger, sizeof linger);
		zmq_setsockopt(sims[i].sock, ZMQ_CURVE_SERVERKEY, key, 40);
		zmq_setsockopt(sims[i].sock, ZMQ_CURVE_PUBLICKEY, pub, 40);
		zmq_setsockopt(sims[i].sock, ZMQ_CURVE_SECRETKEY, sec, 40);
		zmq_connect(sims[i].sock, ep);
	}

	/* Warm-up: every agent enrolls once with the token (binds its key). */
	char first_err[256] = "";
	long wfail = drive(sims, nagents, nagents, token, csrs, csr_lens, NULL, first_err, sizeof first_err);
	if (wfail) {
		fprintf(stderr, "fleetgate-bench: %ld of %d token enrollments failed: %s\n", wfail, nagents, first_err);
		kill(gw, SIGTERM);
		return 1;
	}

	uint64_t *lat = calloc((size_t)nreq, sizeof *lat);
	double cpu0 = proc_cpu(gw);
	uint64_t t0 = fg_mono_ns();
	long failed = drive(sims, nagents, nreq, "", csrs, csr_lens, lat, first_err, sizeof first_err);
	double wall = (double)(fg_mono_ns() - t0) / 1e9;
	double cpu = proc_cpu(gw) - cpu0;
	long rss = proc_rss_kib(gw);
	double bare = bare_crypto(2000, csrs[0], csr_lens[0]);

	qsort(lat, (size_t)nreq, sizeof *lat, cmp_u64);
	double p50 = (double)lat[nreq / 2] / 1e6, p90 = (double)lat[nreq * 9 / 10] / 1e6;
	double p99 = (double)lat[nreq * 99 / 100] / 1e6, pmax = (double)lat[nreq - 1] / 1e6;
	double rate = (double)nreq / wall, per = cpu / (double)nreq;
	if (json) {
		printf("{\"agents\":%d,\"requests\":%ld,\"failed\":%ld,\"workers\":%d,\"wall_s\":%.3f,"
		       "\"enrollments_per_s\":%.1f,\"latency_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"max\":%.2f},"
		       "\"gateway_cpu_s_per_enrollment\":%.6f,\"bare_crypto_cpu_s_per_enrollment\":%.6f,"
		       "\"ratio\":%.2f,\"gateway_rss_kib\":%ld}\n",
		       nagents, nreq, failed, workers, wall, rate, p50, p90, p99, pmax, per, bare,
		       bare > 0 ? per / bare : 0, rss);
	} else {
		printf("fleetgate-bench: %d agents, %ld enrollments, %d gateway workers\n", nagents, nreq, workers);
		printf("  failed:                 %ld%s%s\n", failed, failed ? " (first: " : "", failed ? first_err : "");
		if (failed)
			printf(")\n");
		printf("  wall time:              %.2f s\n", wall);
		printf("  enrollments/s:          %.0f\n", rate);
		printf("  latency ms:             p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", p50, p90, p99, pmax);
		printf("  gateway CPU/enrollment: %.1f us\n", per * 1e6);
		printf("  bare crypto/enrollment: %.1f us (P-256 CSR verify + certificate sign, same machine)\n", bare * 1e6);
		printf("  ratio gateway/bare:     %.2f\n", bare > 0 ? per / bare : 0);
		printf("  gateway RSS:            %ld KiB\n", rss);
	}

	for (int i = 0; i < nagents; i++)
		zmq_close(sims[i].sock);
	zmq_ctx_term(ctx);
	kill(gw, SIGTERM);
	waitpid(gw, NULL, 0);
	for (int i = 0; i < POOL; i++)
		free(csrs[i]);
	free(sims);
	free(lat);
	if (!keep) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		run(cmd);
	} else {
		fprintf(stderr, "state kept in %s\n", dir);
	}
	return failed ? 1 : 0;
}
