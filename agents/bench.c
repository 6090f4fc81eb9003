/*
 * fleetgate-bench: enrollment throughput, latency and gateway CPU cost.
 *
 *   fleetgate-bench [--agents N] [--requests M] [--workers W] [--json] [--keep]
 *                   [--state DIR] [--bin-dir DIR] [--crypto-iterations K]
 *
 * Unless --state names an existing gateway directory, it makes a fresh one
 * (fleetgate init in a temp dir: local P-256 CA, SQLite store, free loopback
 * port, `workers = W`), starts fleetgated on it as a child process and
 * creates one enrollment token with N uses.
 *
 * N simulated agents, each with its own CURVE key pair and DEALER socket, run
 * from a few client threads (one per 250 sockets, each polling its own
 * sockets). Every agent first enrolls once with the token, which binds its
 * key to a new device (warm-up, not measured). Then, measured, the agents keep
 * enrolling (fresh request ids, no token) until M enrollments are done in all.
 * Agent-side crypto is excluded: CSRs come from a pool made up front.
 *
 * Reported: failures, wall time, enrollments/s, latency percentiles, the
 * gateway's CPU-seconds per enrollment (utime+stime of fleetgated from /proc),
 * the bare crypto cost of one enrollment measured in the same run on this
 * machine (one P-256 CSR verification and one certificate signature, single
 * thread CPU time), their ratio, and the gateway's RSS at the end.
 * docs/benchmarks.md explains every figure and holds measured results.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <zmq.h>

#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"

#define BENCH_POOL 64                    /* pre-made CSRs shared by all agents */
#define BENCH_AGENTS_PER_THREAD 250      /* sockets polled by one client thread */
#define BENCH_TIMEOUT_NS (30ull * 1000000000ull) /* a request without reply fails */
#define BENCH_POLL_MS 200                /* poll timeout; also the timeout-scan period */
#define BENCH_REPLY_MAX (1024 * 1024)    /* bytes; cap on a reply frame */
#define BENCH_READY_TIMEOUT_S 30         /* wait for "listening on" */
#define BENCH_OUTPUT_MAX 16384           /* bytes kept from a helper command's output */
#define BENCH_NO_REPLY UINT64_MAX        /* latency slot of a request that got no reply */

struct bench_opts {
	int agents;
	long requests;
	int workers;
	int crypto_iters;
	int json;
	int keep;
	const char *state;               /* existing gateway dir, or NULL for a fresh one */
	char bin_dir[PATH_MAX];          /* holds fleetgate and fleetgated */
};

/* The gateway under test. */
struct gateway {
	char tmp[PATH_MAX];              /* temp dir we made ("" with --state) */
	char state[PATH_MAX];
	char log[PATH_MAX];              /* fleetgated's stderr */
	char endpoint[256];              /* where the agents connect */
	char server_key[41];             /* Z85 CURVE public key */
	int workers;                     /* as configured, 0 when unknown */
	pid_t pid;                       /* fleetgated, 0 when not running */
};

struct csr_pool {
	unsigned char *der[BENCH_POOL];
	size_t len[BENCH_POOL];
};

/* One simulated agent. Its socket is used by exactly one client thread. */
struct agent {
	void *sock;
	char rid[33];                    /* request id in flight */
	char host[32];                   /* Facts.hostname: bench-<i> */
	uint64_t sent_ns;                /* monotonic send time of the request in flight */
	long slot;                       /* index into shared.lat, -1 in the warm-up */
	unsigned base;                   /* agent index: spreads the CSR picks */
	unsigned seq;                    /* requests sent, picks the CSR */
	int busy;                        /* a request is in flight */
	int retired;                     /* timed out or could not send: sends no more */
};

/* State the client threads share; everything mutable is atomic or locked. */
struct shared {
	const struct csr_pool *pool;
	const char *token;
	long total;                      /* measured enrollments to do */
	atomic_long next;                /* measured enrollments claimed so far */
	atomic_long ok;                  /* measured: certificates received */
	atomic_long failed;              /* measured: bad replies, timeouts, failed sends */
	atomic_long warm_failed;         /* warm-up: same */
	atomic_int abort;                /* set by main when the warm-up failed */
	pthread_cond_t gate;             /* client threads wait here until all exist */
	int gate_open;                   /* guarded by lock */
	int cancel;                      /* guarded by lock: a thread failed to start */
	uint64_t *lat;                   /* ns per measured enrollment (BENCH_NO_REPLY if none) */
	pthread_barrier_t warm_done;     /* every client thread finished the warm-up */
	pthread_barrier_t go;            /* main has taken its "before" readings */
	pthread_mutex_t lock;            /* guards the gate, first_err and warm_err */
	char first_err[512];             /* first measured failure */
	char warm_err[512];              /* first warm-up failure */
};

struct client {
	pthread_t thread;
	struct shared *sh;
	struct agent *agents;
	int n;
	int started;
};

/* What a run measured, for the report. */
struct results {
	int agents;
	long requests;
	long ok;                         /* certificates received */
	long failed;                     /* requests - ok: all of the below */
	long bad;                        /* bad replies, timeouts, failed sends */
	long unsent;                     /* never sent: every agent had stopped */
	long answered;
	int workers;
	int client_threads;
	double wall_s;
	double rate;
	double p50_ms, p90_ms, p99_ms, max_ms;
	double gw_cpu_s;                 /* gateway CPU in the measured phase */
	double gw_cpu_per;               /* ... per enrollment */
	double client_cpu_per;           /* this process's CPU per enrollment */
	double bare_per;                 /* CSR verify + certificate sign, seconds */
	double verify_per, certsign_per; /* its two halves */
	double ecdsa_sign_per;           /* raw P-256 ECDSA on a 32-byte digest */
	double ecdsa_verify_per;
	long rss_kib;
	char first_err[512];
};

/* ---- helper processes ---- */

/* Run argv (argv[0] a path) and wait for it. Its stdout is kept in out (NUL
 * terminated, truncated to outlen) and its stderr in errout, read through
 * poll so neither pipe can fill up and stall the child. Returns the exit
 * status (0..255), or -1 with err set when it could not run or was killed. */
static int run_capture(char *const argv[], char *out, size_t outlen, char *errout, size_t errlen,
		       char *err, size_t elen)
{
	int po[2] = { -1, -1 }, pe[2] = { -1, -1 }, status = 0, rc = -1;
	size_t no = 0, ne = 0;
	pid_t pid;

	out[0] = errout[0] = '\0';
	if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
		fg_seterr(err, elen, "cannot make a pipe: %s", strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		fg_seterr(err, elen, "cannot fork to run %s: %s", argv[0], strerror(errno));
		goto out;
	}
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		execv(argv[0], argv);
		dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	po[1] = pe[1] = -1;
	for (int open_fds = 2; open_fds > 0;) {
		struct pollfd pfd[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			char buf[4096], *dst = i == 0 ? out : errout;
			size_t *used = i == 0 ? &no : &ne, cap = i == 0 ? outlen : errlen;
			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = read(pfd[i].fd, buf, sizeof buf);
			if (r <= 0) {
				close(i == 0 ? po[0] : pe[0]);
				if (i == 0)
					po[0] = -1;
				else
					pe[0] = -1;
				open_fds--;
				continue;
			}
			size_t take = (size_t)r;
			if (*used + take >= cap)
				take = cap - 1 - *used;
			memcpy(dst + *used, buf, take);
			*used += take;
			dst[*used] = '\0';
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status)) {
		fg_seterr(err, elen, "%s was killed by signal %d", argv[0],
			  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		goto out;
	}
	rc = WEXITSTATUS(status);
out:
	for (int i = 0; i < 2; i++) {
		if (po[i] >= 0)
			close(po[i]);
		if (pe[i] >= 0)
			close(pe[i]);
	}
	return rc;
}

/* Strip trailing newlines and spaces in place. */
static void chomp(char *s)
{
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
		s[--n] = '\0';
}

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it). */
static int free_port(char *err, size_t errlen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
		fg_seterr(err, errlen, "cannot find a free loopback port: %s", strerror(errno));
	else
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* ---- gateway set-up ---- */

/* Set `workers = W` in the config made by fleetgate init: the line is
 * replaced, or appended when absent (the config is Lua; the last assignment
 * wins). */
static int config_set_workers(const char *conf, int workers, char *err, size_t errlen)
{
	char *text = NULL, *outbuf = NULL, *line;
	size_t len = 0, o = 0;
	int rc = -1, done = 0;

	if (fg_read_file(conf, 1024 * 1024, &text, &len, err, errlen) != 0)
		goto out;
	outbuf = malloc(len + 64);
	if (outbuf == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	for (line = text; *line;) {
		char *nl = strchr(line, '\n');
		size_t ll = nl ? (size_t)(nl - line) + 1 : strlen(line);
		if (!done && strncmp(line, "workers", 7) == 0 && strspn(line + 7, " \t=") > 0) {
			o += (size_t)snprintf(outbuf + o, 64, "workers = %d\n", workers);
			done = 1;
		} else {
			memcpy(outbuf + o, line, ll);
			o += ll;
		}
		line += ll;
	}
	if (!done)
		o += (size_t)snprintf(outbuf + o, 64, "\nworkers = %d\n", workers);
	if (fg_write_file_atomic(conf, outbuf, o, 0640, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	free(text);
	free(outbuf);
	return rc;
}

/* Read what the bench needs from an existing state dir: the listen endpoint
 * (a wildcard host becomes 127.0.0.1), the worker count, and the gateway's
 * CURVE public key from keys/gateway.pub. Reads the simple `key = value`
 * lines that fleetgate init writes. */
static int gateway_read_state(struct gateway *gw, char *err, size_t errlen)
{
	char path[PATH_MAX + 32], *text = NULL, *p, listen[256] = "";
	size_t len;
	int rc = -1;

	snprintf(path, sizeof path, "%s/fleetgated.conf", gw->state);
	if (fg_read_file(path, 1024 * 1024, &text, &len, err, errlen) != 0)
		goto out;
	for (p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (sscanf(p, "listen = \"%255[^\"]\"", listen) == 1)
			continue;
		sscanf(p, "workers = %d", &gw->workers);
	}
	if (listen[0] == '\0') {
		fg_seterr(err, errlen, "%s has no line listen = \"tcp://HOST:PORT\"; "
			  "use a state dir made by fleetgate init", path);
		goto out;
	}
	int n;
	if (strncmp(listen, "tcp://*:", 8) == 0)
		n = snprintf(gw->endpoint, sizeof gw->endpoint, "tcp://127.0.0.1:%s", listen + 8);
	else if (strncmp(listen, "tcp://0.0.0.0:", 14) == 0)
		n = snprintf(gw->endpoint, sizeof gw->endpoint, "tcp://127.0.0.1:%s", listen + 14);
	else
		n = (int)fg_strlcpy(gw->endpoint, listen, sizeof gw->endpoint);
	if (n < 0 || (size_t)n >= sizeof gw->endpoint) {
		fg_seterr(err, errlen, "listen endpoint '%s' in %s is too long", listen, path);
		goto out;
	}
	free(text);
	text = NULL;

	snprintf(path, sizeof path, "%s/keys/gateway.pub", gw->state);
	if (fg_read_file(path, 4096, &text, &len, err, errlen) != 0)
		goto out;
	if (sscanf(text, "public = %40s", gw->server_key) != 1 || strlen(gw->server_key) != 40) {
		fg_seterr(err, errlen, "%s has no line 'public = <40 Z85 characters>'", path);
		goto out;
	}
	rc = 0;
out:
	free(text);
	return rc;
}

/* Make a fresh gateway in a temp dir: fleetgate init on a free loopback
 * port, then `workers = W` in its config. */
static int gateway_init(struct gateway *gw, const struct bench_opts *o, char *err, size_t errlen)
{
	char bin[PATH_MAX + 16], listen[64], out[BENCH_OUTPUT_MAX], errout[BENCH_OUTPUT_MAX];
	char conf[PATH_MAX + 32];
	const char *tmpdir = getenv("TMPDIR");
	int port;

	snprintf(gw->tmp, sizeof gw->tmp, "%s/fleetgate-bench.XXXXXX",
		 tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (mkdtemp(gw->tmp) == NULL) {
		fg_seterr(err, errlen, "cannot make a temp dir %s: %s", gw->tmp, strerror(errno));
		gw->tmp[0] = '\0';
		return -1;
	}
	if (fg_path_join(gw->tmp, "state", gw->state, sizeof gw->state) != 0) {
		fg_seterr(err, errlen, "temp dir path %s is too long", gw->tmp);
		return -1;
	}
	port = free_port(err, errlen);
	if (port < 0)
		return -1;
	snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
	snprintf(bin, sizeof bin, "%s/fleetgate", o->bin_dir);
	char *argv[] = { bin, (char *)"init", (char *)"--state", gw->state, (char *)"--listen", listen, NULL };
	int r = run_capture(argv, out, sizeof out, errout, sizeof errout, err, errlen);
	if (r != 0) {
		if (r > 0) {
			chomp(errout);
			fg_seterr(err, errlen, "fleetgate init failed (exit %d): %s", r, errout);
		}
		return -1;
	}
	snprintf(conf, sizeof conf, "%s/fleetgated.conf", gw->state);
	return config_set_workers(conf, o->workers, err, errlen);
}

/* Start fleetgated on gw->state with stderr going to gw->log, and wait
 * until it logs "listening on". A gateway that exits or stays silent is an
 * error that quotes the end of its log. */
static int gateway_start(struct gateway *gw, const struct bench_opts *o, char *err, size_t errlen)
{
	char bin[PATH_MAX + 16];
	uint64_t deadline;

	snprintf(bin, sizeof bin, "%s/fleetgated", o->bin_dir);
	if (fg_path_join(gw->tmp[0] ? gw->tmp : gw->state, "fleetgated.log", gw->log, sizeof gw->log) != 0) {
		fg_seterr(err, errlen, "state dir path %s is too long", gw->state);
		return -1;
	}
	int fd = open(gw->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fg_seterr(err, errlen, "cannot write the gateway log %s: %s", gw->log, strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		fg_seterr(err, errlen, "cannot fork: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
		}
		dup2(fd, 2);
		execl(bin, bin, "--state", gw->state, (char *)NULL);
		dprintf(2, "cannot run %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(fd);
	gw->pid = pid;

	deadline = fg_mono_ns() + (uint64_t)BENCH_READY_TIMEOUT_S * 1000000000ull;
	for (;;) {
		char *text = NULL;
		size_t len = 0;
		int status, ready = 0, exited = 0;
		if (fg_read_file(gw->log, 64 * 1024 * 1024, &text, &len, NULL, 0) == 0) {
			ready = strstr(text, "listening on") != NULL;
			if (!ready)
				exited = waitpid(pid, &status, WNOHANG) == pid;
			if (!ready && (exited || fg_mono_ns() > deadline)) {
				const char *tail = len > 600 ? text + len - 600 : text;
				chomp(text);
				fg_seterr(err, errlen, "fleetgated %s (log %s): %s",
					  exited ? "exited before it listened" : "did not log 'listening on' in 30 s",
					  gw->log, tail);
				free(text);
				if (!exited) {
					kill(pid, SIGKILL);
					waitpid(pid, NULL, 0);
				}
				gw->pid = 0;
				return -1;
			}
		}
		free(text);
		if (ready)
			return 0;
		usleep(20000);
	}
}

/* SIGTERM the gateway and reap it; SIGKILL after 10 s. */
static void gateway_stop(struct gateway *gw)
{
	uint64_t deadline = fg_mono_ns() + 10000000000ull;

	if (gw->pid <= 0)
		return;
	kill(gw->pid, SIGTERM);
	while (waitpid(gw->pid, NULL, WNOHANG) == 0) {
		if (fg_mono_ns() > deadline) {
			fprintf(stderr, "fleetgate-bench: fleetgated did not stop in 10 s; killing it\n");
			kill(gw->pid, SIGKILL);
			waitpid(gw->pid, NULL, 0);
			break;
		}
		usleep(20000);
	}
	gw->pid = 0;
}

/* Create the bench token (group bench, one use per agent). The token is
 * read from the CLI's stdout and wiped by the caller. */
static int gateway_token(const struct gateway *gw, const struct bench_opts *o, char token[64],
			 char *err, size_t errlen)
{
	char bin[PATH_MAX + 16], uses[32], out[BENCH_OUTPUT_MAX], errout[BENCH_OUTPUT_MAX];
	char state[PATH_MAX];
	int rc = -1;

	snprintf(bin, sizeof bin, "%s/fleetgate", o->bin_dir);
	snprintf(uses, sizeof uses, "%d", o->agents);
	fg_strlcpy(state, gw->state, sizeof state);
	char *argv[] = { bin, (char *)"token", (char *)"create", (char *)"--state", state,
			 (char *)"--group", (char *)"bench", (char *)"--uses", uses,
			 (char *)"--ttl", (char *)"1h", NULL };
	int r = run_capture(argv, out, sizeof out, errout, sizeof errout, err, errlen);
	if (r != 0) {
		if (r > 0) {
			chomp(errout);
			fg_seterr(err, errlen, "fleetgate token create failed (exit %d): %s", r, errout);
		}
		goto out;
	}
	if (sscanf(out, "%63s", token) != 1 || !fg_token_wellformed(token)) {
		fg_seterr(err, errlen, "fleetgate token create printed no token on stdout");
		goto out;
	}
	rc = 0;
out:
	OPENSSL_cleanse(out, sizeof out);
	return rc;
}

/* Remove a directory tree (the temp gateway). */
static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path) == 0 ? 0 : -1;
}

/* ---- /proc readings ---- */

/* utime + stime of pid in seconds, or -1 when /proc cannot tell. Fields 14
 * and 15 of /proc/PID/stat, counted after the ")" that ends the command
 * name (which may itself hold spaces). */
static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[4096];
	unsigned long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	if (p == NULL ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* VmRSS of pid in KiB, or -1. */
static long proc_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static double self_cpu_s(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double thread_cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- bare crypto ---- */

/* The crypto floor of one enrollment on this machine, single thread, CPU
 * time: iters rounds of X509_REQ_verify on a pool CSR plus X509_sign
 * (SHA-256) of a prepared leaf with ca_key; then, for comparison with
 * `openssl speed ecdsap256`, raw P-256 ECDSA sign and verify of a 32-byte
 * digest. Seconds per operation go into r. */
static int bare_crypto(const struct csr_pool *pool, EVP_PKEY *ca_key, int iters, struct results *r,
		       char *err, size_t errlen)
{
	X509_REQ *req = NULL;
	X509 *leaf = NULL;
	X509_NAME *name = NULL;
	EVP_PKEY *ec = NULL;
	EVP_PKEY_CTX *sctx = NULL, *vctx = NULL;
	unsigned char dgst[32], sig[128];
	size_t siglen;
	const unsigned char *p = pool->der[0];
	double t0, t_verify = 0, t_sign = 0;
	int rc = -1;

	req = d2i_X509_REQ(NULL, &p, (long)pool->len[0]);
	leaf = X509_new();
	name = X509_NAME_new();
	if (req == NULL || leaf == NULL || name == NULL ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"bench-0", -1, -1, 0) ||
	    !X509_set_version(leaf, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(leaf), 0x0123456789abcdefL) ||
	    !X509_set_subject_name(leaf, name) || !X509_set_issuer_name(leaf, name) ||
	    !X509_gmtime_adj(X509_getm_notBefore(leaf), 0) ||
	    !X509_gmtime_adj(X509_getm_notAfter(leaf), 30 * 86400L) ||
	    !X509_set_pubkey(leaf, X509_REQ_get0_pubkey(req))) {
		fg_ssl_err(err, errlen, "cannot prepare the bare-crypto certificate");
		goto out;
	}
	for (int i = 0; i < iters; i++) {
		t0 = thread_cpu_s();
		if (X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
			fg_ssl_err(err, errlen, "X509_REQ_verify failed on a pool CSR");
			goto out;
		}
		t_verify += thread_cpu_s() - t0;
		t0 = thread_cpu_s();
		if (X509_sign(leaf, ca_key, EVP_sha256()) <= 0) {
			fg_ssl_err(err, errlen, "X509_sign failed");
			goto out;
		}
		t_sign += thread_cpu_s() - t0;
	}
	r->verify_per = t_verify / iters;
	r->certsign_per = t_sign / iters;
	r->bare_per = r->verify_per + r->certsign_per;

	ec = fg_key_generate(FG_KEY_P256, err, errlen);
	if (ec == NULL)
		goto out;
	memset(dgst, 0x5a, sizeof dgst);
	sctx = EVP_PKEY_CTX_new(ec, NULL);
	vctx = EVP_PKEY_CTX_new(ec, NULL);
	if (sctx == NULL || vctx == NULL || EVP_PKEY_sign_init(sctx) <= 0 || EVP_PKEY_verify_init(vctx) <= 0) {
		fg_ssl_err(err, errlen, "cannot set up raw ECDSA");
		goto out;
	}
	t0 = thread_cpu_s();
	for (int i = 0; i < iters; i++) {
		siglen = sizeof sig;
		if (EVP_PKEY_sign(sctx, sig, &siglen, dgst, sizeof dgst) <= 0) {
			fg_ssl_err(err, errlen, "ECDSA sign failed");
			goto out;
		}
	}
	r->ecdsa_sign_per = (thread_cpu_s() - t0) / iters;
	t0 = thread_cpu_s();
	for (int i = 0; i < iters; i++) {
		if (EVP_PKEY_verify(vctx, sig, siglen, dgst, sizeof dgst) != 1) {
			fg_ssl_err(err, errlen, "ECDSA verify failed");
			goto out;
		}
	}
	r->ecdsa_verify_per = (thread_cpu_s() - t0) / iters;
	rc = 0;
out:
	EVP_PKEY_CTX_free(sctx);
	EVP_PKEY_CTX_free(vctx);
	EVP_PKEY_free(ec);
	X509_NAME_free(name);
	X509_free(leaf);
	X509_REQ_free(req);
	return rc;
}

/* The CA key the gateway signs with (state/ca/ca.key of the local backend)
 * so the bare cost uses the same key type; a fresh P-256 key when that file
 * is not readable. */
static EVP_PKEY *bench_ca_key(const struct gateway *gw, char *err, size_t errlen)
{
	char path[PATH_MAX + 16];
	EVP_PKEY *k;

	snprintf(path, sizeof path, "%s/ca/ca.key", gw->state);
	if (access(path, R_OK) == 0 && (k = fg_key_load(path, NULL, 0)) != NULL)
		return k;
	return fg_key_generate(FG_KEY_P256, err, errlen);
}

/* ---- the simulated agents ---- */

static int pool_build(struct csr_pool *pool, char *err, size_t errlen)
{
	for (int i = 0; i < BENCH_POOL; i++) {
		char cn[32];
		snprintf(cn, sizeof cn, "bench-%d", i);
		const char *const dns[1] = { cn };
		EVP_PKEY *k = fg_key_generate(FG_KEY_P256, err, errlen);
		if (k == NULL)
			return -1;
		int r = fg_csr_build(k, cn, dns, 1, &pool->der[i], &pool->len[i], err, errlen);
		EVP_PKEY_free(k);
		if (r != 0)
			return -1;
	}
	return 0;
}

static void pool_free(struct csr_pool *pool)
{
	for (int i = 0; i < BENCH_POOL; i++)
		free(pool->der[i]);
}

/* Note a failure: count it and keep the first message of its phase. */
static void note_failure(struct shared *sh, int measured, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void note_failure(struct shared *sh, int measured, const char *fmt, ...)
{
	char *dst = measured ? sh->first_err : sh->warm_err;
	va_list ap;

	atomic_fetch_add(measured ? &sh->failed : &sh->warm_failed, 1);
	pthread_mutex_lock(&sh->lock);
	if (dst[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(dst, sizeof sh->first_err, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&sh->lock);
}

/* Start the agent's next request: in the warm-up its one token enrollment,
 * measured a claimed slot of the shared total with no token. Returns 1 when
 * a request is in flight, 0 when there is nothing (more) to send or the send
 * failed (counted; the agent retires). */
static int agent_start(struct shared *sh, struct agent *a, int measured)
{
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__EnrollRequest er = FLEETGATE__ENROLL_REQUEST__INIT;
	Fleetgate__Facts facts = FLEETGATE__FACTS__INIT;
	const struct csr_pool *pool = sh->pool;
	uint8_t *buf = NULL;
	size_t len = 0;
	long slot = -1;
	unsigned pick;

	if (a->retired)
		return 0;
	if (measured) {
		slot = atomic_fetch_add(&sh->next, 1);
		if (slot >= sh->total)
			return 0;
	}
	if (fg_request_id_new(a->rid) != 0) {
		note_failure(sh, measured, "cannot make a request id (no randomness)");
		a->retired = 1;
		return 0;
	}
	pick = (a->base + a->seq++) % BENCH_POOL;
	facts.hostname = a->host;
	facts.secure_boot = -1;
	facts.agent_version = (char *)"fleetgate-bench " FG_VERSION;
	er.slot = (char *)"bench";
	er.csr_der.data = pool->der[pick];
	er.csr_der.len = pool->len[pick];
	er.token = measured ? (char *)"" : (char *)sh->token;
	er.facts = &facts;
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = a->rid;
	env.body_case = FLEETGATE__ENVELOPE__BODY_ENROLL;
	env.enroll = &er;
	if (fg_wire_pack(&env, &buf, &len) != 0) {
		note_failure(sh, measured, "cannot encode an EnrollRequest");
		a->retired = 1;
		return 0;
	}
	a->slot = slot;
	a->sent_ns = fg_mono_ns();
	int r = zmq_send(a->sock, buf, len, ZMQ_DONTWAIT);
	free(buf);
	if (r < 0) {
		note_failure(sh, measured, "cannot send to the gateway: %s", zmq_strerror(zmq_errno()));
		a->retired = 1;
		return 0;
	}
	a->busy = 1;
	return 1;
}

/* Take one reply off the agent's socket. Replies to an earlier request (one
 * that already timed out) are dropped. Returns 1 when it answered the
 * request in flight, 0 when nothing relevant was read. */
static int agent_receive(struct shared *sh, struct agent *a, int measured)
{
	zmq_msg_t m;
	Fleetgate__Envelope *env = NULL;
	char err[256];
	int answered = 0;

	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, a->sock, ZMQ_DONTWAIT) < 0)
		goto out;
	uint64_t now = fg_mono_ns();
	if (!a->busy)
		goto out;
	env = fg_wire_unpack(zmq_msg_data(&m), zmq_msg_size(&m), BENCH_REPLY_MAX, err, sizeof err);
	if (env == NULL) {
		if (zmq_msg_more(&m))
			goto out;
		note_failure(sh, measured, "undecodable reply: %s", err);
		answered = 1;
	} else if (strcmp(env->request_id, a->rid) != 0) {
		goto out;
	} else if (env->body_case != FLEETGATE__ENVELOPE__BODY_CERT_REPLY) {
		note_failure(sh, measured, "reply is not a CertReply: %s",
			     env->body_case == FLEETGATE__ENVELOPE__BODY_ERROR ? env->error->message : "other body");
		answered = 1;
	} else if (env->cert_reply->status != FLEETGATE__STATUS__STATUS_OK) {
		note_failure(sh, measured, "%s: %s", fg_status_name(env->cert_reply->status),
			     env->cert_reply->message);
		answered = 1;
	} else if (env->cert_reply->cert_der.len == 0) {
		note_failure(sh, measured, "status ok but no certificate in the reply");
		answered = 1;
	} else {
		if (measured)
			atomic_fetch_add(&sh->ok, 1);
		answered = 1;
	}
	if (answered) {
		if (a->slot >= 0)
			sh->lat[a->slot] = now - a->sent_ns;
		a->busy = 0;
	}
out:
	fg_wire_free(env);
	zmq_msg_close(&m);
	return answered;
}

/* Drive this thread's agents through one phase until none has a request in
 * flight. In the warm-up each agent sends one request; measured, every reply
 * starts the agent's next request while the shared total lasts. A request with no
 * reply in 30 s fails and retires its agent (a dead gateway ends the run in
 * 30 s, not 30 s per round). */
static void client_phase(struct client *c, zmq_pollitem_t *items, int measured)
{
	struct shared *sh = c->sh;
	int pending = 0;
	uint64_t next_scan = fg_mono_ns() + BENCH_POLL_MS * 1000000ull;

	for (int i = 0; i < c->n; i++)
		pending += agent_start(sh, &c->agents[i], measured);
	while (pending > 0) {
		if (zmq_poll(items, c->n, BENCH_POLL_MS) < 0 && zmq_errno() != EINTR) {
			note_failure(sh, measured, "zmq_poll failed: %s", zmq_strerror(zmq_errno()));
			break;
		}
		for (int i = 0; i < c->n; i++) {
			struct agent *a = &c->agents[i];
			if (!(items[i].revents & ZMQ_POLLIN))
				continue;
			/* Drain: a late reply may sit in front of the current one. */
			for (int k = 0; k < 4; k++) {
				int ev = 0;
				size_t sz = sizeof ev;
				if (k > 0 && (zmq_getsockopt(a->sock, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)))
					break;
				if (agent_receive(sh, a, measured)) {
					pending--;
					if (measured)
						pending += agent_start(sh, a, measured);
					break;
				}
			}
		}
		uint64_t now = fg_mono_ns();
		if (now < next_scan)
			continue;
		next_scan = now + BENCH_POLL_MS * 1000000ull;
		for (int i = 0; i < c->n; i++) {
			struct agent *a = &c->agents[i];
			if (a->busy && now - a->sent_ns > BENCH_TIMEOUT_NS) {
				note_failure(sh, measured, "no reply within 30 s (request %s)", a->rid);
				a->busy = 0;
				a->retired = 1;
				pending--;
			}
		}
	}
}

/* One client thread: wait until every client thread exists (if one could
 * not start, nobody could pass the barriers, so all leave at once), warm-up,
 * meet the others, wait for main's readings, measured phase. */
static void *client_main(void *arg)
{
	struct client *c = arg;
	zmq_pollitem_t *items = NULL;
	int cancel;

	pthread_mutex_lock(&c->sh->lock);
	while (!c->sh->gate_open)
		pthread_cond_wait(&c->sh->gate, &c->sh->lock);
	cancel = c->sh->cancel;
	pthread_mutex_unlock(&c->sh->lock);
	if (cancel)
		return NULL;

	items = calloc((size_t)c->n, sizeof *items);
	if (items == NULL) {
		note_failure(c->sh, 0, "out of memory");
	} else {
		for (int i = 0; i < c->n; i++) {
			items[i].socket = c->agents[i].sock;
			items[i].events = ZMQ_POLLIN;
		}
		client_phase(c, items, 0);
	}
	pthread_barrier_wait(&c->sh->warm_done);
	pthread_barrier_wait(&c->sh->go);
	if (items != NULL && !atomic_load(&c->sh->abort))
		client_phase(c, items, 1);
	free(items);
	return NULL;
}

/* Give every agent a CURVE key pair and a connected DEALER socket. */
static int agents_connect(void *ctx, struct agent *agents, int n, const struct gateway *gw,
			  char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		struct agent *a = &agents[i];
		char pub[41], sec[41];
		int linger = 0, hwm = 100000;

		snprintf(a->host, sizeof a->host, "bench-%d", i);
		a->base = (unsigned)i;
		if (zmq_curve_keypair(pub, sec) != 0) {
			fg_seterr(err, errlen, "zmq_curve_keypair: %s (libzmq built without CURVE?)",
				  zmq_strerror(zmq_errno()));
			return -1;
		}
		a->sock = zmq_socket(ctx, ZMQ_DEALER);
		int bad = a->sock == NULL ||
			  zmq_setsockopt(a->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
			  zmq_setsockopt(a->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
			  zmq_setsockopt(a->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
			  zmq_setsockopt(a->sock, ZMQ_CURVE_SERVERKEY, gw->server_key, 40) != 0 ||
			  zmq_setsockopt(a->sock, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
			  zmq_setsockopt(a->sock, ZMQ_CURVE_SECRETKEY, sec, 40) != 0 ||
			  zmq_connect(a->sock, gw->endpoint) != 0;
		OPENSSL_cleanse(sec, sizeof sec);
		if (bad) {
			fg_seterr(err, errlen, "agent %d: cannot set up its socket to %s: %s%s", i, gw->endpoint,
				  zmq_strerror(zmq_errno()),
				  zmq_errno() == EMFILE ? " (raise the open-file limit: ulimit -n)" : "");
			return -1;
		}
	}
	return 0;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

/* Nearest-rank percentile q (0..1] of the n sorted latencies, in ms. */
static double pct_ms(const uint64_t *sorted, long n, double q)
{
	long k;

	if (n <= 0)
		return 0;
	k = (long)(q * (double)n + 0.999999) - 1;
	if (k < 0)
		k = 0;
	if (k >= n)
		k = n - 1;
	return (double)sorted[k] / 1e6;
}

/* ---- the run ---- */

/* Run warm-up and measured phase against a started gateway and fill r with
 * what was measured (bare crypto excluded). Returns -1 when the run could
 * not take place (set-up failed, every warm-up failed). */
static int bench_run(const struct bench_opts *o, const struct gateway *gw, const char *token,
		     const struct csr_pool *pool, struct results *r, char *err, size_t errlen)
{
	void *ctx = NULL;
	struct agent *agents = NULL;
	struct client *clients = NULL;
	struct shared *sh = NULL;
	int nthreads = (o->agents + BENCH_AGENTS_PER_THREAD - 1) / BENCH_AGENTS_PER_THREAD;
	int barriers = 0, start_failed = 0, rc = -1;
	double cpu0, cpu1, self0, self1;
	uint64_t t0, t1;

	agents = calloc((size_t)o->agents, sizeof *agents);
	clients = calloc((size_t)nthreads, sizeof *clients);
	sh = calloc(1, sizeof *sh);
	if (agents == NULL || clients == NULL || sh == NULL ||
	    (sh->lat = malloc((size_t)o->requests * sizeof *sh->lat)) == NULL) {
		fg_seterr(err, errlen, "out of memory for %d agents and %ld requests", o->agents, o->requests);
		goto out;
	}
	for (long i = 0; i < o->requests; i++)
		sh->lat[i] = BENCH_NO_REPLY;
	sh->pool = pool;
	sh->token = token;
	sh->total = o->requests;
	atomic_init(&sh->next, 0);
	atomic_init(&sh->ok, 0);
	atomic_init(&sh->failed, 0);
	atomic_init(&sh->warm_failed, 0);
	atomic_init(&sh->abort, 0);
	pthread_mutex_init(&sh->lock, NULL);
	pthread_cond_init(&sh->gate, NULL);
	pthread_barrier_init(&sh->warm_done, NULL, (unsigned)nthreads + 1);
	pthread_barrier_init(&sh->go, NULL, (unsigned)nthreads + 1);
	barriers = 1;

	ctx = zmq_ctx_new();
	if (ctx == NULL || zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, o->agents + 16) != 0) {
		fg_seterr(err, errlen, "cannot make a ZeroMQ context for %d sockets: %s", o->agents + 16,
			  zmq_strerror(zmq_errno()));
		goto out;
	}
	if (agents_connect(ctx, agents, o->agents, gw, err, errlen) != 0)
		goto out;

	for (int t = 0; t < nthreads; t++) {
		clients[t].sh = sh;
		clients[t].agents = agents + t * BENCH_AGENTS_PER_THREAD;
		clients[t].n = t == nthreads - 1 ? o->agents - t * BENCH_AGENTS_PER_THREAD : BENCH_AGENTS_PER_THREAD;
		if (pthread_create(&clients[t].thread, NULL, client_main, &clients[t]) != 0) {
			fg_seterr(err, errlen, "cannot start client thread %d of %d", t + 1, nthreads);
			start_failed = 1;
			break;
		}
		clients[t].started = 1;
	}
	pthread_mutex_lock(&sh->lock);
	sh->cancel = start_failed;
	sh->gate_open = 1;
	pthread_cond_broadcast(&sh->gate);
	pthread_mutex_unlock(&sh->lock);
	if (sh->cancel) {
		for (int t = 0; t < nthreads; t++)
			if (clients[t].started)
				pthread_join(clients[t].thread, NULL);
		goto out;
	}

	pthread_barrier_wait(&sh->warm_done);
	long wf = atomic_load(&sh->warm_failed);
	if (wf > 0)
		atomic_store(&sh->abort, 1);
	cpu0 = proc_cpu_s(gw->pid);
	self0 = self_cpu_s();
	t0 = fg_mono_ns();
	pthread_barrier_wait(&sh->go);
	for (int t = 0; t < nthreads; t++)
		pthread_join(clients[t].thread, NULL);
	t1 = fg_mono_ns();
	cpu1 = proc_cpu_s(gw->pid);
	self1 = self_cpu_s();
	if (wf > 0) {
		fg_seterr(err, errlen, "%ld of %d token enrollments (warm-up) failed; first: %s", wf, o->agents,
			  sh->warm_err);
		goto out;
	}

	r->agents = o->agents;
	r->requests = o->requests;
	r->client_threads = nthreads;
	/* Claims beyond the total are never sent. When every agent stopped
	 * early (timeouts, failed sends) the rest of the total stays unsent
	 * and counts as failed too, so ok + failed == requests. */
	long ok = atomic_load(&sh->ok), claimed = atomic_load(&sh->next);
	r->bad = atomic_load(&sh->failed);
	r->unsent = claimed < o->requests ? o->requests - claimed : 0;
	r->failed = o->requests - ok;
	r->wall_s = (double)(t1 - t0) / 1e9;
	r->rate = r->wall_s > 0 ? (double)ok / r->wall_s : 0;
	r->gw_cpu_s = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
	/* Per enrollment means per certificate received; failed requests
	 * cost CPU too but produce nothing. */
	r->ok = ok;
	r->gw_cpu_per = ok > 0 && r->gw_cpu_s >= 0 ? r->gw_cpu_s / (double)ok : 0;
	r->client_cpu_per = ok > 0 ? (self1 - self0) / (double)ok : 0;
	r->rss_kib = proc_rss_kib(gw->pid);
	fg_strlcpy(r->first_err, sh->first_err, sizeof r->first_err);

	qsort(sh->lat, (size_t)o->requests, sizeof *sh->lat, cmp_u64);
	r->answered = 0;
	while (r->answered < o->requests && sh->lat[r->answered] != BENCH_NO_REPLY)
		r->answered++;
	r->p50_ms = pct_ms(sh->lat, r->answered, 0.50);
	r->p90_ms = pct_ms(sh->lat, r->answered, 0.90);
	r->p99_ms = pct_ms(sh->lat, r->answered, 0.99);
	r->max_ms = r->answered > 0 ? (double)sh->lat[r->answered - 1] / 1e6 : 0;
	rc = 0;
out:
	if (agents != NULL) {
		for (int i = 0; i < o->agents; i++)
			if (agents[i].sock != NULL)
				zmq_close(agents[i].sock);
	}
	if (ctx != NULL)
		zmq_ctx_term(ctx);
	if (sh != NULL) {
		if (barriers) {
			pthread_barrier_destroy(&sh->warm_done);
			pthread_barrier_destroy(&sh->go);
			pthread_mutex_destroy(&sh->lock);
			pthread_cond_destroy(&sh->gate);
		}
		free(sh->lat);
	}
	free(sh);
	free(clients);
	free(agents);
	return rc;
}

/* ---- report ---- */

static void report_text(const struct results *r)
{
	printf("fleetgate-bench: %d agents (%d client thread%s), %ld measured enrollments, %d gateway worker%s\n",
	       r->agents, r->client_threads, r->client_threads == 1 ? "" : "s", r->requests, r->workers,
	       r->workers == 1 ? "" : "s");
	printf("  failed:                    %ld", r->failed);
	if (r->unsent)
		printf(" (%ld never sent: every agent had stopped)", r->unsent);
	if (r->bad)
		printf("\n  first failure:             %s", r->first_err);
	printf("\n");
	printf("  wall time:                 %.3f s\n", r->wall_s);
	printf("  enrollments/s:             %.0f\n", r->rate);
	printf("  latency ms:                p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", r->p50_ms, r->p90_ms,
	       r->p99_ms, r->max_ms);
	if (r->ok > 0) {
		printf("  gateway CPU:               %.2f s, %.1f us per enrollment\n", r->gw_cpu_s,
		       r->gw_cpu_per * 1e6);
		printf("  bench client CPU:          %.1f us per enrollment (same machine, competes for the cores)\n",
		       r->client_cpu_per * 1e6);
	} else {
		printf("  gateway CPU:               %.2f s, per enrollment n/a (none succeeded)\n", r->gw_cpu_s);
	}
	printf("  bare crypto:               %.1f us per enrollment (CSR verify %.1f + certificate sign %.1f)\n",
	       r->bare_per * 1e6, r->verify_per * 1e6, r->certsign_per * 1e6);
	printf("  raw ECDSA P-256:           sign %.1f us (%.0f/s), verify %.1f us (%.0f/s)\n",
	       r->ecdsa_sign_per * 1e6, r->ecdsa_sign_per > 0 ? 1 / r->ecdsa_sign_per : 0,
	       r->ecdsa_verify_per * 1e6, r->ecdsa_verify_per > 0 ? 1 / r->ecdsa_verify_per : 0);
	if (r->ok > 0)
		printf("  ratio gateway/bare:        %.2f\n", r->bare_per > 0 ? r->gw_cpu_per / r->bare_per : 0);
	printf("  gateway RSS at the end:    %ld KiB\n", r->rss_kib);
}

/* The same figures as one JSON object on one line (seconds and ms as
 * floats, so scripts need not parse units). */
static int report_json(const struct results *r)
{
	json_t *o = json_pack(
		"{s:i, s:I, s:I, s:s?, s:I, s:i, s:i, s:f, s:f, s:{s:f, s:f, s:f, s:f}, s:f, s:f, s:f, s:f, "
		"s:f, s:f, s:f, s:f, s:f, s:I}",
		"agents", r->agents,
		"requests", (json_int_t)r->requests,
		"failed", (json_int_t)r->failed,
		"first_failure", r->bad ? r->first_err : NULL,
		"unsent", (json_int_t)r->unsent,
		"workers", r->workers,
		"client_threads", r->client_threads,
		"wall_s", r->wall_s,
		"enrollments_per_s", r->rate,
		"latency_ms", "p50", r->p50_ms, "p90", r->p90_ms, "p99", r->p99_ms, "max", r->max_ms,
		"gateway_cpu_s", r->gw_cpu_s,
		"gateway_cpu_s_per_enrollment", r->gw_cpu_per,
		"client_cpu_s_per_enrollment", r->client_cpu_per,
		"bare_crypto_s_per_enrollment", r->bare_per,
		"csr_verify_s", r->verify_per,
		"cert_sign_s", r->certsign_per,
		"ecdsa_p256_sign_s", r->ecdsa_sign_per,
		"ecdsa_p256_verify_s", r->ecdsa_verify_per,
		"ratio_gateway_to_bare", r->bare_per > 0 ? r->gw_cpu_per / r->bare_per : 0.0,
		"gateway_rss_kib", (json_int_t)r->rss_kib);
	if (o == NULL)
		return -1;
	int rc = json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
	printf("\n");
	json_decref(o);
	return rc;
}

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fleetgate-bench [--agents N] [--requests M] [--workers W] [--json] [--keep]\n"
		"                       [--state DIR] [--bin-dir DIR] [--crypto-iterations K]\n"
		"\n"
		"Start a gateway with a fresh local P-256 CA, enroll N simulated agents once\n"
		"with a token, then measure M more enrollments (no token) from all of them at\n"
		"once. Defaults: 100 agents, 2000 requests, 2 workers, 2000 crypto iterations.\n"
		"  --state DIR   use this existing gateway dir (made by fleetgate init) as is;\n"
		"                it is kept, and --workers does not change it\n"
		"  --bin-dir DIR where fleetgate and fleetgated are (default: ../gateway next\n"
		"                to this program, as in the build tree)\n"
		"  --keep        keep the temp gateway dir (store, log) after the run\n");
}

/* Parse a whole number in [lo, hi]; -1 on anything else. */
static long parse_num(const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	return v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "agents", required_argument, NULL, 'a' },
		{ "requests", required_argument, NULL, 'r' },
		{ "workers", required_argument, NULL, 'w' },
		{ "state", required_argument, NULL, 's' },
		{ "bin-dir", required_argument, NULL, 'b' },
		{ "crypto-iterations", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "keep", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_opts o = { .agents = 100, .requests = 2000, .workers = 2, .crypto_iters = 2000 };
	struct gateway gw;
	struct csr_pool pool;
	struct results res;
	struct rlimit rl;
	EVP_PKEY *ca_key = NULL;
	char err[1024] = "", token[64] = "";
	int c, rc = 1;
	long v;

	memset(&gw, 0, sizeof gw);
	memset(&pool, 0, sizeof pool);
	memset(&res, 0, sizeof res);
	while ((c = getopt_long(argc, argv, "a:r:w:s:b:c:jkh", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
		case 'r':
		case 'w':
		case 'c':
			v = parse_num(optarg, 1, c == 'a' ? 100000 : c == 'w' ? 64 : c == 'c' ? 10000000 : 100000000);
			if (v < 0) {
				fprintf(stderr, "fleetgate-bench: --%s '%s' is out of range (--agents 1..100000, "
					"--requests 1..100000000, --workers 1..64, --crypto-iterations 1..10000000)\n",
					c == 'a' ? "agents" : c == 'r' ? "requests" : c == 'w' ? "workers" : "crypto-iterations",
					optarg);
				return 2;
			}
			if (c == 'a')
				o.agents = (int)v;
			else if (c == 'r')
				o.requests = v;
			else if (c == 'w')
				o.workers = (int)v;
			else
				o.crypto_iters = (int)v;
			break;
		case 's': o.state = optarg; break;
		case 'b': fg_strlcpy(o.bin_dir, optarg, sizeof o.bin_dir); break;
		case 'j': o.json = 1; break;
		case 'k': o.keep = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (o.bin_dir[0] == '\0') {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n <= 0) {
			fprintf(stderr, "fleetgate-bench: cannot read /proc/self/exe; give --bin-dir\n");
			return 2;
		}
		exe[n] = '\0';
		snprintf(o.bin_dir, sizeof o.bin_dir, "%s/../gateway", dirname(exe));
	}
	char probe[PATH_MAX + 16];
	snprintf(probe, sizeof probe, "%s/fleetgated", o.bin_dir);
	if (access(probe, X_OK) != 0) {
		fprintf(stderr, "fleetgate-bench: %s is not an executable (%s); "
			"give --bin-dir DIR with fleetgate and fleetgated\n", probe, strerror(errno));
		return 2;
	}

	/* Every agent socket is a file descriptor here and in fleetgated
	 * (which inherits the limit); raise the soft limit to the hard one. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (rlim_t)o.agents + 64 > rl.rlim_cur)
		fprintf(stderr, "fleetgate-bench: warning: the open-file limit %lu is low for %d agents\n",
			(unsigned long)rl.rlim_cur, o.agents);
	signal(SIGPIPE, SIG_IGN);

	if (o.state != NULL) {
		fg_strlcpy(gw.state, o.state, sizeof gw.state);
	} else if (gateway_init(&gw, &o, err, sizeof err) != 0) {
		goto out;
	}
	if (gateway_read_state(&gw, err, sizeof err) != 0)
		goto out;
	if (gateway_start(&gw, &o, err, sizeof err) != 0)
		goto out;
	if (gateway_token(&gw, &o, token, err, sizeof err) != 0)
		goto out;
	if (pool_build(&pool, err, sizeof err) != 0)
		goto out;
	if (bench_run(&o, &gw, token, &pool, &res, err, sizeof err) != 0)
		goto out;
	res.workers = gw.workers;
	ca_key = bench_ca_key(&gw, err, sizeof err);
	if (ca_key == NULL || bare_crypto(&pool, ca_key, o.crypto_iters, &res, err, sizeof err) != 0)
		goto out;
	if (o.json ? report_json(&res) != 0 : (report_text(&res), 0)) {
		fg_seterr(err, sizeof err, "cannot write the JSON report");
		goto out;
	}
	fflush(stdout);
	rc = res.failed > 0 ? 1 : 0;
	err[0] = '\0';
out:
	if (err[0])
		fprintf(stderr, "fleetgate-bench: %s\n", err);
	OPENSSL_cleanse(token, sizeof token);
	EVP_PKEY_free(ca_key);
	pool_free(&pool);
	gateway_stop(&gw);
	if (gw.tmp[0]) {
		if (o.keep || rc != 0)
			fprintf(stderr, "fleetgate-bench: gateway state and log kept in %s\n", gw.tmp);
		else if (nftw(gw.tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
			fprintf(stderr, "fleetgate-bench: cannot remove %s: %s\n", gw.tmp, strerror(errno));
	}
	return rc;
}
