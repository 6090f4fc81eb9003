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
 *
 * --mode scep measures the SCEP backend instead. The bench makes a throwaway
 * RSA-2048 CA with Debian's micromdm scepserver (scepserver ca -init), runs
 * scepserver on a free loopback port as a child process, and points the
 * fresh gateway's default profile at a `scep` backend for it. A SCEP CA
 * copies the CSR, so the gateway wants exactly the decided names and the
 * challengePassword in it: the pool then holds one RSA-2048 CSR per agent
 * (CN and DNS SAN bench-<i>, what the default policy decides for hostname
 * bench-<i>, plus the challenge), signed with a few pre-made keys. A
 * STATUS_RESUBMIT reply is a failure: the pool does not match the decision.
 * In the same run, M' scepclient processes (P at a time, each in its own
 * directory with a pre-made key) enroll directly against the same
 * scepserver; both are reported side by side with their ratios. Unless told
 * otherwise the gateway gets one worker and P is 1: scepserver 2.1.0 issues
 * duplicate serials under concurrent requests (see main). The bare crypto
 * figures are local-CA figures and are not measured in this mode.
 *
 * --mode est measures the EST front-end next to the ZeroMQ path in the same
 * run: the fresh gateway is made with `fleetgate init --est`, the ZeroMQ
 * phase runs as in local mode, and then C client threads (--est-clients,
 * libcurl, one kept-alive TLS connection each) POST M simpleenroll requests
 * with their own pre-made P-256 CSRs and a token of M uses (bench_est.h).
 * Both go to the same local CA; both are reported with their ratio.
 *
 * docs/benchmarks.md explains every figure and holds measured results.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <zmq.h>

#include "bench_est.h"
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
#define BENCH_SCEP_KEYS 8                /* RSA-2048 keys behind the SCEP-mode CSRs */
#define BENCH_DIRECT_MAX 1000            /* default cap on direct scepclient enrollments */
#define BENCH_HIST_SUB 8                 /* linear sub-buckets per power of two */
#define BENCH_HIST_MAX (40 * BENCH_HIST_SUB) /* histogram buckets: 1 us .. 2^40 us */
#define BENCH_LATE_NS 2000000ull         /* open loop: a send this late is counted */
#define BENCH_SCEP_READY_S 10            /* wait for scepserver to accept connections */

extern char **environ;

enum bench_mode {
	BENCH_MODE_LOCAL,                /* local CA of a fresh gateway (the default) */
	BENCH_MODE_SCEP,                 /* scep backend to a scepserver the bench runs */
	BENCH_MODE_EST,                  /* local CA, ZeroMQ path and then the EST front-end */
	BENCH_MODE_ACME,                 /* acme backend to a pebble the bench runs */
	BENCH_MODE_MAX
};

struct bench_opts {
	enum bench_mode mode;
	int agents;
	long requests;
	int workers;
	int crypto_iters;
	int json;
	int keep;
	const char *state;               /* existing gateway dir, or NULL for a fresh one */
	char bin_dir[PATH_MAX];          /* holds fleetgate and fleetgated */
	long direct_requests;            /* scep mode: direct scepclient enrollments */
	int direct_parallel;             /* scep mode: scepclient processes at once */
	int est_clients;                 /* est mode: client threads (connections) */
	double rate;                     /* --rate: open loop, requests/s offered; 0 closed */
	int poisson;                     /* --poisson: exponential gaps instead of even ones */
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
	pid_t upstream_pid;              /* scep mode: scepserver, CPU also measured; else 0 */
	char est_url[128];               /* est mode: https://127.0.0.1:PORT/.well-known/est */
};

/* CSRs made before the run. Local mode: BENCH_POOL CSRs shared by all
 * agents in rotation. SCEP mode: one per agent (per_agent), because each
 * must carry its agent's decided names. */
struct csr_pool {
	unsigned char **der;
	size_t *len;
	int n;
	int per_agent;                   /* agent i always sends der[i] */
};

/* The upstream CA: a scepserver child process (scep mode) or a pebble one
 * (acme mode), and the direct client run against it. */
struct upstream {
	int acme;                        /* 1 in acme mode */
	const char *server_name;         /* "scepserver" or "pebble", for the report */
	const char *client_name;         /* "scepclient" or "lego" */
	char dir[PATH_MAX];              /* <gateway temp dir>/scep or /acme: depot, log, direct/ */
	char server[PATH_MAX];           /* scepserver or pebble binary */
	char client[PATH_MAX];           /* scepclient or lego binary */
	char log[PATH_MAX + 32];         /* the server's stdout and stderr */
	char url[128];                   /* http://127.0.0.1:PORT/scep, or pebble's directory URL */
	char root_url[128];              /* acme: pebble's root on its management port */
	char tls_ca[PATH_MAX + 32];      /* acme: trust anchor of pebble's TLS (a throwaway CA) */
	char fingerprint[128];           /* SHA-256 of depot/ca.pem, AA:BB:... */
	char challenge[33];              /* random per run, hex */
	EVP_PKEY *keys[BENCH_SCEP_KEYS]; /* RSA-2048 keys behind the CSRs and scepclient runs */
	int nkeys;
	pid_t pid;                       /* 0 when not running */
};

/* What the direct scepclient phase measured. */
struct direct_results {
	long requests;
	int parallel;                    /* scepclient processes at once */
	long ok;                         /* certificates written */
	long failed;
	double wall_s;
	double rate;
	double p50_ms, p90_ms, p99_ms, max_ms; /* per-process wall time */
	double client_cpu_per;           /* scepclient utime+stime (wait4) per enrollment */
	double ca_cpu_per;               /* scepserver CPU per enrollment, seconds; -1 unknown */
	char first_err[512];
};

/* One simulated agent. Its socket is used by exactly one client thread. */
struct agent {
	void *sock;
	char rid[33];                    /* request id in flight */
	char host[32];                   /* Facts.hostname: bench-<i> */
	uint64_t sent_ns;                /* when the request in flight counts from: its send
					  * (closed loop) or its scheduled time (open loop) */
	uint64_t wire_ns;                /* when it was really sent: the 30 s timeout */
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
	/* open loop (--rate): each client thread offers its share of the rate
	 * from start_ns on; a request's latency counts from its scheduled time */
	double gap_ns;                   /* mean gap between one thread's arrivals */
	int poisson;
	uint64_t start_ns;               /* set by main before the go barrier */
	atomic_long late;                /* sent more than 2 ms after their time */
	char first_err[512];             /* first measured failure */
	char warm_err[512];              /* first warm-up failure */
};

struct client {
	pthread_t thread;
	struct shared *sh;
	int index, nthreads;
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
	double p999_ms;
	double offered_rate;             /* --rate, 0 in a closed-loop run */
	int poisson;
	long late;                       /* open loop: sent > 2 ms after their scheduled time */
	long hist_n;                     /* latency histogram (answered requests) */
	double hist_le_ms[BENCH_HIST_MAX]; /* bucket upper bounds */
	long hist_count[BENCH_HIST_MAX];
	double gw_cpu_s;                 /* gateway CPU in the measured phase */
	double gw_cpu_per;               /* ... per enrollment */
	double signer_cpu_per;           /* the signer process's part of it */
	double client_cpu_per;           /* this process's CPU per enrollment */
	double bare_per;                 /* CSR verify + certificate sign, seconds */
	double verify_per, certsign_per; /* its two halves */
	double ecdsa_sign_per;           /* raw P-256 ECDSA on a 32-byte digest */
	double ecdsa_verify_per;
	long rss_kib;
	char first_err[512];
	/* scep mode only */
	enum bench_mode mode;
	double ca_cpu_per;               /* scepserver CPU per gateway enrollment; -1 unknown */
	const struct upstream *ca;
	struct direct_results direct;
	/* est mode only */
	struct est_bench_results est;
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
	char estl[64];
	char *argv[] = { bin, (char *)"init", (char *)"--state", gw->state, (char *)"--listen", listen,
			 NULL, NULL, NULL };
	if (o->mode == BENCH_MODE_EST) {
		int eport;
		do
			eport = free_port(err, errlen);
		while (eport == port);
		if (eport < 0)
			return -1;
		snprintf(estl, sizeof estl, "127.0.0.1:%d", eport);
		snprintf(gw->est_url, sizeof gw->est_url, "https://%s/.well-known/est", estl);
		argv[6] = (char *)"--est";
		argv[7] = estl;
	}
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
static int gateway_token(const struct gateway *gw, const struct bench_opts *o, long nuses,
			 char token[64], char *err, size_t errlen)
{
	char bin[PATH_MAX + 16], uses[32], out[BENCH_OUTPUT_MAX], errout[BENCH_OUTPUT_MAX];
	char state[PATH_MAX];
	int rc = -1;

	snprintf(bin, sizeof bin, "%s/fleetgate", o->bin_dir);
	snprintf(uses, sizeof uses, "%ld", nuses);
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

/* proc_cpu_s of pid and every process below it (fleetgated's monitor and
 * signer), read from /proc; *signer_s gets the part of the processes named
 * fg-signer. -1 when pid itself cannot be read. */
static double tree_cpu_s(pid_t pid, double *signer_s)
{
	double total = proc_cpu_s(pid);
	pid_t frontier[64];
	size_t nf = 1;
	DIR *d;
	struct dirent *e;

	*signer_s = 0;
	if (total < 0)
		return -1;
	frontier[0] = pid;
	for (size_t at = 0; at < nf; at++) {
		if ((d = opendir("/proc")) == NULL)
			break;
		while ((e = readdir(d)) != NULL && nf < sizeof frontier / sizeof frontier[0]) {
			char path[300], buf[1024], comm[64] = "";
			int child = atoi(e->d_name), ppid = 0;
			if (child <= 0)
				continue;
			snprintf(path, sizeof path, "/proc/%d/stat", child);
			FILE *f = fopen(path, "re");
			if (f == NULL)
				continue;
			size_t n = fread(buf, 1, sizeof buf - 1, f);
			fclose(f);
			buf[n] = 0;
			char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
			if (lp == NULL || rp == NULL || sscanf(rp + 1, " %*c %d", &ppid) != 1 || ppid != frontier[at])
				continue;
			snprintf(comm, sizeof comm, "%.*s", (int)(rp - lp - 1), lp + 1);
			double c = proc_cpu_s(child);
			if (c > 0) {
				total += c;
				if (strcmp(comm, "fg-signer") == 0)
					*signer_s += c;
			}
			frontier[nf++] = child;
		}
		closedir(d);
	}
	return total;
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

/* Allocate room for n CSRs. */
static int pool_alloc(struct csr_pool *pool, int n, char *err, size_t errlen)
{
	pool->der = calloc((size_t)n, sizeof *pool->der);
	pool->len = calloc((size_t)n, sizeof *pool->len);
	if (pool->der == NULL || pool->len == NULL) {
		fg_seterr(err, errlen, "out of memory for %d CSRs", n);
		return -1;
	}
	pool->n = n;
	return 0;
}

/* Local mode: BENCH_POOL P-256 CSRs (CN and DNS bench-<i>) for all agents. */
static int pool_build(struct csr_pool *pool, char *err, size_t errlen)
{
	if (pool_alloc(pool, BENCH_POOL, err, errlen) != 0)
		return -1;
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

/* SCEP mode: one RSA-2048 CSR per agent with what the default policy
 * decides for its hostname bench-<i> (cn = the lower-cased hostname, dns =
 * { hostname }) and the CA's challengePassword. The keys come from ca->keys
 * in rotation: RSA key generation is slow and is no part of what is measured. */
static int pool_build_scep(struct csr_pool *pool, int agents, const struct upstream *ca, char *err,
			   size_t errlen)
{
	pool->per_agent = 1;
	if (pool_alloc(pool, agents, err, errlen) != 0)
		return -1;
	for (int i = 0; i < agents; i++) {
		char cn[32];
		snprintf(cn, sizeof cn, "bench-%d", i);
		const char *const dns[1] = { cn };
		struct fg_csr_names nm = { .cn = cn, .dns = dns, .ndns = 1, .challenge = ca->challenge };
		if (fg_csr_build_names(ca->keys[i % ca->nkeys], &nm, &pool->der[i], &pool->len[i], err,
				       errlen) != 0)
			return -1;
	}
	return 0;
}

static void pool_free(struct csr_pool *pool)
{
	for (int i = 0; i < pool->n; i++)
		free(pool->der[i]);
	free(pool->der);
	free(pool->len);
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
/* Send agent a's next EnrollRequest as measured enrollment number slot
 * (-1 in the warm-up), its latency counted from sched_ns. Returns 1 when
 * sent; 0 when the agent retired (the failure is noted). */
static int agent_send(struct shared *sh, struct agent *a, int measured, long slot, uint64_t sched_ns)
{
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__EnrollRequest er = FLEETGATE__ENROLL_REQUEST__INIT;
	Fleetgate__Facts facts = FLEETGATE__FACTS__INIT;
	const struct csr_pool *pool = sh->pool;
	uint8_t *buf = NULL;
	size_t len = 0;
	unsigned pick;

	if (fg_request_id_new(a->rid) != 0) {
		note_failure(sh, measured, "cannot make a request id (no randomness)");
		a->retired = 1;
		return 0;
	}
	pick = pool->per_agent ? a->base % (unsigned)pool->n : (a->base + a->seq++) % (unsigned)pool->n;
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
	a->sent_ns = sched_ns;
	a->wire_ns = fg_mono_ns();
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

/* Closed loop: the agent's next request, now, while the total lasts. */
static int agent_start(struct shared *sh, struct agent *a, int measured)
{
	long slot = -1;

	if (a->retired)
		return 0;
	if (measured) {
		slot = atomic_fetch_add(&sh->next, 1);
		if (slot >= sh->total)
			return 0;
	}
	return agent_send(sh, a, measured, slot, fg_mono_ns());
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
	} else if (env->cert_reply->status == FLEETGATE__STATUS__STATUS_RESUBMIT) {
		const Fleetgate__CsrTemplate *t = env->cert_reply->csr_template;
		note_failure(sh, measured, "STATUS_RESUBMIT for %s: the gateway wants a CSR with cn '%s'%s%s%s "
			     "and %s challengePassword; the bench's CSR does not carry exactly these names and the CA's challenge "
			     "(is the gateway running the default policy?)", a->host,
			     t && t->subject_cn ? t->subject_cn : "?", t && t->n_dns ? " and dns '" : "",
			     t && t->n_dns ? t->dns[0] : "", t && t->n_dns ? "'" : "",
			     t && t->challenge_password && *t->challenge_password ? "a" : "no");
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

/* Read agent a's socket until the reply to its request in flight (a late
 * reply to an earlier one may sit in front of it). 1 when it came. */
static int agent_drain(struct shared *sh, struct agent *a, int measured)
{
	for (int k = 0; k < 4; k++) {
		int ev = 0;
		size_t sz = sizeof ev;
		if (k > 0 && (zmq_getsockopt(a->sock, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)))
			return 0;
		if (agent_receive(sh, a, measured))
			return 1;
	}
	return 0;
}

/* Fail and retire every agent of c whose request went out more than 30 s
 * before now; how many. */
static int retire_timed_out(struct client *c, uint64_t now, int measured)
{
	int n = 0;
	for (int i = 0; i < c->n; i++) {
		struct agent *a = &c->agents[i];
		if (a->busy && now - a->wire_ns > BENCH_TIMEOUT_NS) {
			note_failure(c->sh, measured, "no reply within 30 s (request %s)", a->rid);
			a->busy = 0;
			a->retired = 1;
			n++;
		}
	}
	return n;
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
			if (agent_drain(sh, a, measured)) {
				pending--;
				if (measured)
					pending += agent_start(sh, a, measured);
			}
		}
		uint64_t now = fg_mono_ns();
		if (now < next_scan)
			continue;
		next_scan = now + BENCH_POLL_MS * 1000000ull;
		pending -= retire_timed_out(c, now, measured);
	}
}

/* The gap to this thread's next arrival: even, or exponential (a Poisson
 * process) from a per-thread xorshift generator. */
static double next_gap_ns(const struct shared *sh, uint64_t *rng)
{
	if (!sh->poisson)
		return sh->gap_ns;
	*rng ^= *rng << 13;
	*rng ^= *rng >> 7;
	*rng ^= *rng << 17;
	double u = ((double)(*rng >> 11) + 0.5) / 9007199254740992.0;   /* (0, 1) */
	return -log(u) * sh->gap_ns;
}

/* Open loop (--rate): arrivals come on a schedule whether or not the
 * gateway keeps up. An arrival goes to an idle agent of this thread; when
 * all are busy it waits in a queue, and its latency still counts from its
 * scheduled time, so a stalled gateway shows in the figures instead of
 * slowing the arrivals (coordinated omission, as wrk2 corrects it). */
static void client_phase_open(struct client *c, zmq_pollitem_t *items)
{
	struct shared *sh = c->sh;
	struct { long slot; uint64_t at; } *queue = NULL;
	size_t qhead = 0, qlen = 0, qcap = 0;
	int pending = 0, more = 1, idle = c->n;
	uint64_t rng = ((uint64_t)c->index + 1) * 0x9E3779B97F4A7C15ull;
	/* even arrivals: the threads' schedules interleave */
	double next_at = (double)sh->start_ns +
			 (sh->poisson ? next_gap_ns(sh, &rng) : sh->gap_ns * c->index / c->nthreads);
	uint64_t next_scan = fg_mono_ns() + BENCH_POLL_MS * 1000000ull;

	for (;;) {
		uint64_t now = fg_mono_ns();
		/* the arrivals that are due */
		while (more && next_at <= (double)now) {
			long slot = atomic_fetch_add(&sh->next, 1);
			if (slot >= sh->total) {
				more = 0;
				break;
			}
			if (qhead + qlen == qcap) {
				if (qhead > 0) {
					memmove(queue, queue + qhead, qlen * sizeof *queue);
					qhead = 0;
				} else {
					size_t ncap = qcap ? 2 * qcap : 1024;
					void *nq = realloc(queue, ncap * sizeof *queue);
					if (nq == NULL) {
						note_failure(sh, 1, "out of memory for the arrival queue");
						more = 0;
						break;
					}
					queue = nq;
					qcap = ncap;
				}
			}
			queue[qhead + qlen].slot = slot;
			queue[qhead + qlen].at = (uint64_t)next_at;
			qlen++;
			next_at += next_gap_ns(sh, &rng);
		}
		/* hand them to idle agents, oldest first */
		int j;
		for (j = 0; j < c->n && qlen > 0 && idle > 0; j++) {
			struct agent *a = &c->agents[j];
			if (a->busy || a->retired)
				continue;
			uint64_t at = queue[qhead].at;
			long slot = queue[qhead].slot;
			qhead++;
			qlen--;
			if (now > at + BENCH_LATE_NS)
				atomic_fetch_add(&sh->late, 1);
			if (agent_send(sh, a, 1, slot, at)) {
				pending++;
				idle--;
			} else {
				idle--;  /* retired */
			}
		}
		if (j == c->n && qlen > 0)
			idle = 0;    /* every agent is busy or retired */
		if (!more && qlen == 0 && pending == 0)
			break;
		if (pending == 0 && idle == 0)
			break;   /* every agent retired: the queued arrivals stay unsent */
		/* wait for replies, or for the next arrival */
		long wait_ms = BENCH_POLL_MS;
		if (more && (qlen == 0 || idle > 0)) {
			/* zmq_poll counts whole ms: round up, so the client never spins;
			 * an arrival goes out at most 1 ms after its time, and that
			 * delay is part of its latency */
			double d = (next_at - (double)fg_mono_ns()) / 1e6;
			wait_ms = d <= 0 ? 0 : d < BENCH_POLL_MS ? (long)ceil(d) : BENCH_POLL_MS;
		}
		if (qlen > 0 && idle > 0)
			wait_ms = 0;
		if (zmq_poll(items, c->n, wait_ms) < 0 && zmq_errno() != EINTR) {
			note_failure(sh, 1, "zmq_poll failed: %s", zmq_strerror(zmq_errno()));
			break;
		}
		for (int i = 0; i < c->n; i++) {
			struct agent *a = &c->agents[i];
			if (!(items[i].revents & ZMQ_POLLIN))
				continue;
			if (agent_drain(sh, a, 1)) {
				pending--;
				idle++;
			}
		}
		now = fg_mono_ns();
		if (now < next_scan)
			continue;
		next_scan = now + BENCH_POLL_MS * 1000000ull;
		pending -= retire_timed_out(c, now, 1);
	}
	free(queue);
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
	if (items != NULL && !atomic_load(&c->sh->abort)) {
		if (c->sh->gap_ns > 0)
			client_phase_open(c, items);
		else
			client_phase(c, items, 1);
	}
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

/* An HDR-style histogram of the n sorted latencies: each power of two of
 * microseconds split into BENCH_HIST_SUB even buckets (12.5% resolution);
 * only the buckets that hold a latency are kept, in order. */
static void histogram(const uint64_t *sorted, long n, struct results *r)
{
	r->hist_n = 0;
	for (long i = 0; i < n;) {
		uint64_t us = sorted[i] / 1000;
		int k = us < 1 ? 0 : 63 - __builtin_clzll(us);
		uint64_t lo = 1ull << k;
		uint64_t sub = us < 1 ? 0 : (us - lo) * BENCH_HIST_SUB / lo;
		double le_us = (double)lo * (1.0 + (double)(sub + 1) / BENCH_HIST_SUB);
		long cnt = 0;
		while (i < n && (double)(sorted[i] / 1000) < le_us) {
			cnt++;
			i++;
		}
		if (cnt == 0) {     /* cannot happen; never loop forever */
			cnt = 1;
			i++;
		}
		if (r->hist_n < BENCH_HIST_MAX) {
			r->hist_le_ms[r->hist_n] = le_us / 1000.0;
			r->hist_count[r->hist_n] = cnt;
			r->hist_n++;
		} else {
			r->hist_count[BENCH_HIST_MAX - 1] += cnt;
		}
	}
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
	double cpu0, cpu1, self0, self1, up0 = -1, up1 = -1, sig0 = 0, sig1 = 0;
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
	sh->gap_ns = o->rate > 0 ? (double)nthreads * 1e9 / o->rate : 0;
	sh->poisson = o->poisson;
	atomic_init(&sh->late, 0);
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
		clients[t].index = t;
		clients[t].nthreads = nthreads;
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
	cpu0 = tree_cpu_s(gw->pid, &sig0);
	if (gw->upstream_pid > 0)
		up0 = proc_cpu_s(gw->upstream_pid);
	self0 = self_cpu_s();
	t0 = fg_mono_ns();
	sh->start_ns = t0;
	pthread_barrier_wait(&sh->go);
	for (int t = 0; t < nthreads; t++)
		pthread_join(clients[t].thread, NULL);
	t1 = fg_mono_ns();
	cpu1 = tree_cpu_s(gw->pid, &sig1);
	if (gw->upstream_pid > 0)
		up1 = proc_cpu_s(gw->upstream_pid);
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
	r->signer_cpu_per = ok > 0 ? (sig1 - sig0) / (double)ok : 0;
	r->client_cpu_per = ok > 0 ? (self1 - self0) / (double)ok : 0;
	r->ca_cpu_per = ok > 0 && up0 >= 0 && up1 >= 0 ? (up1 - up0) / (double)ok : -1;
	r->rss_kib = proc_rss_kib(gw->pid);
	fg_strlcpy(r->first_err, sh->first_err, sizeof r->first_err);

	qsort(sh->lat, (size_t)o->requests, sizeof *sh->lat, cmp_u64);
	r->answered = 0;
	while (r->answered < o->requests && sh->lat[r->answered] != BENCH_NO_REPLY)
		r->answered++;
	r->p50_ms = pct_ms(sh->lat, r->answered, 0.50);
	r->p90_ms = pct_ms(sh->lat, r->answered, 0.90);
	r->p99_ms = pct_ms(sh->lat, r->answered, 0.99);
	r->p999_ms = pct_ms(sh->lat, r->answered, 0.999);
	r->offered_rate = o->rate;
	r->poisson = o->poisson;
	r->late = atomic_load(&sh->late);
	histogram(sh->lat, r->answered, r);
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

/* ---- scep mode: the upstream CA and the direct scepclient runs ---- */

/* Find name in $PATH; 0 with its full path in out, else -1. */
static int find_program(const char *name, char *out, size_t outlen)
{
	const char *path = getenv("PATH");
	char dirs[4096], *save = NULL;

	fg_strlcpy(dirs, path && *path ? path : "/usr/local/bin:/usr/bin:/bin", sizeof dirs);
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		int n = snprintf(out, outlen, "%s/%s", *d ? d : ".", name);
		if (n > 0 && (size_t)n < outlen && access(out, X_OK) == 0)
			return 0;
	}
	return -1;
}

/* Write len bytes to path (created with mode, truncated). No fsync: these
 * are throwaway files of a benchmark. */
static int write_small_file(const char *path, const void *data, size_t len, mode_t mode, char *err,
			    size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	ssize_t w = fd < 0 ? -1 : write(fd, data, len);

	if (fd < 0 || w != (ssize_t)len) {
		fg_seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return close(fd);
}

/* The last ~300 bytes of a log file on one line, for an error message. */
static void log_tail(const char *path, char *out, size_t outlen)
{
	char *text = NULL;
	size_t len = 0;

	out[0] = '\0';
	if (fg_read_file(path, 64 * 1024 * 1024, &text, &len, NULL, 0) != 0)
		return;
	chomp(text);
	len = strlen(text);
	fg_strlcpy(out, len > 300 ? text + len - 300 : text, outlen);
	for (char *p = out; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	free(text);
}

/* posix_spawn argv in dir (NULL: here) with stdin from /dev/null and
 * stdout+stderr appended to logpath. Returns the pid, or -1 with err set. */
static pid_t spawn_logged(char *const argv[], const char *dir, const char *logpath, char *err, size_t errlen)
{
	posix_spawn_file_actions_t fa;
	pid_t pid = -1;
	int r;

	if (posix_spawn_file_actions_init(&fa) != 0) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	r = (dir ? posix_spawn_file_actions_addchdir_np(&fa, dir) : 0) ||
	    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) ||
	    posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_APPEND, 0644) ||
	    posix_spawn_file_actions_adddup2(&fa, 1, 2);
	if (r == 0)
		r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	if (r != 0) {
		fg_seterr(err, errlen, "cannot run %s: %s", argv[0], strerror(r));
		pid = -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

/* SHA-256 of the first certificate in pempath as AA:BB:..., the form the
 * scep plugin's ca_fingerprint accepts. */
static int cert_fingerprint(const char *pempath, char *out, size_t outlen, char *err, size_t errlen)
{
	STACK_OF(X509) *certs = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *pem = NULL;
	size_t len = 0, o = 0;
	int rc = -1;

	if (fg_read_file(pempath, 1024 * 1024, &pem, &len, err, errlen) != 0)
		goto out;
	certs = fg_certs_from_pem(pem, len, err, errlen);
	if (certs == NULL)
		goto out;
	if (sk_X509_num(certs) < 1 || !X509_digest(sk_X509_value(certs, 0), EVP_sha256(), md, &mdlen) ||
	    outlen < (size_t)mdlen * 3) {
		char what[PATH_MAX + 128];
		snprintf(what, sizeof what, "cannot take the SHA-256 fingerprint of %s", pempath);
		fg_ssl_err(err, errlen, what);
		goto out;
	}
	for (unsigned int i = 0; i < mdlen; i++)
		o += (size_t)snprintf(out + o, outlen - o, i ? ":%02X" : "%02X", md[i]);
	rc = 0;
out:
	sk_X509_pop_free(certs, X509_free);
	free(pem);
	return rc;
}

/* 1 when something accepts TCP connections on 127.0.0.1:port. */
static int port_open(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return 0;
	ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return ok;
}

/* Make a throwaway RSA-2048 CA in <tmp>/scep/depot with `scepserver ca
 * -init`, start scepserver on a free loopback port with a random challenge
 * (its log in <tmp>/scep/scepserver.log), wait until it accepts
 * connections, and make the RSA-2048 keys the CSRs and scepclient runs use.
 * On failure the caller still calls scep_ca_stop. */
static int scep_ca_start(struct upstream *ca, const char *tmp, char *err, size_t errlen)
{
	char depot[PATH_MAX + 16], capem[PATH_MAX + 32], port_s[16], tail[400];
	char out[BENCH_OUTPUT_MAX], errout[BENCH_OUTPUT_MAX];
	unsigned char rnd[16];
	uint64_t deadline;
	int port, status;

	if (find_program("scepserver", ca->server, sizeof ca->server) != 0 ||
	    find_program("scepclient", ca->client, sizeof ca->client) != 0) {
		fg_seterr(err, errlen, "--mode scep needs scepserver and scepclient in PATH "
			  "(Debian: apt-get install scep)");
		return -1;
	}
	if (fg_path_join(tmp, "scep", ca->dir, sizeof ca->dir) != 0 ||
	    fg_mkdirs(ca->dir, 0700, err, errlen) != 0) {
		if (!err[0])
			fg_seterr(err, errlen, "temp dir path %s is too long", tmp);
		return -1;
	}
	snprintf(depot, sizeof depot, "%s/depot", ca->dir);
	snprintf(capem, sizeof capem, "%s/ca.pem", depot);
	snprintf(ca->log, sizeof ca->log, "%s/scepserver.log", ca->dir);

	char *init_argv[] = { ca->server, (char *)"ca", (char *)"-init", (char *)"-depot", depot,
			      (char *)"-keySize", (char *)"2048", (char *)"-organization",
			      (char *)"fleetgate-bench", NULL };
	int r = run_capture(init_argv, out, sizeof out, errout, sizeof errout, err, errlen);
	if (r != 0) {
		if (r > 0) {
			chomp(errout);
			fg_seterr(err, errlen, "scepserver ca -init -depot %s failed (exit %d): %s", depot, r, errout);
		}
		return -1;
	}
	if (cert_fingerprint(capem, ca->fingerprint, sizeof ca->fingerprint, err, errlen) != 0)
		return -1;
	if (RAND_bytes(rnd, sizeof rnd) != 1) {
		fg_ssl_err(err, errlen, "cannot make a random SCEP challenge");
		return -1;
	}
	for (size_t i = 0; i < sizeof rnd; i++)
		snprintf(ca->challenge + 2 * i, 3, "%02x", rnd[i]);

	port = free_port(err, errlen);
	if (port < 0)
		return -1;
	snprintf(port_s, sizeof port_s, "%d", port);
	snprintf(ca->url, sizeof ca->url, "http://127.0.0.1:%d/scep", port);
	/* XXX scepserver takes the challenge only in argv; it is a random
	 * throwaway for a loopback CA that lives as long as this run. */
	char *run_argv[] = { ca->server, (char *)"-depot", depot, (char *)"-port", port_s,
			     (char *)"-challenge", ca->challenge, (char *)"-allowrenew", (char *)"0", NULL };
	ca->pid = spawn_logged(run_argv, NULL, ca->log, err, errlen);
	if (ca->pid < 0) {
		ca->pid = 0;
		return -1;
	}
	/* scepserver listens on every address; 127.0.0.1 is what we use. */
	deadline = fg_mono_ns() + (uint64_t)BENCH_SCEP_READY_S * 1000000000ull;
	while (!port_open(port)) {
		int exited = waitpid(ca->pid, &status, WNOHANG) == ca->pid;
		if (exited || fg_mono_ns() > deadline) {
			log_tail(ca->log, tail, sizeof tail);
			fg_seterr(err, errlen, "scepserver on port %d %s (log %s): %s", port,
				  exited ? "exited before it listened" : "did not accept connections in 10 s",
				  ca->log, tail);
			if (exited)
				ca->pid = 0;
			return -1;
		}
		usleep(20000);
	}
	for (ca->nkeys = 0; ca->nkeys < BENCH_SCEP_KEYS; ca->nkeys++) {
		ca->keys[ca->nkeys] = fg_key_generate(FG_KEY_RSA2048, err, errlen);
		if (ca->keys[ca->nkeys] == NULL)
			return -1;
	}
	return 0;
}

/* Kill scepserver (it does not stop on SIGTERM; nothing of its state is
 * kept) and free the keys. */
static void scep_ca_stop(struct upstream *ca)
{
	if (ca->pid > 0) {
		kill(ca->pid, SIGKILL);
		waitpid(ca->pid, NULL, 0);
		ca->pid = 0;
	}
	for (int i = 0; i < ca->nkeys; i++)
		EVP_PKEY_free(ca->keys[i]);
	ca->nkeys = 0;
}

/* Add a `scep` backend for ca to the fresh gateway's config and make it the
 * default profile's backend. The config is Lua run once, so statements
 * appended at the end amend the tables it built. */
static int config_add_scep(const char *conf, const struct upstream *ca, char *err, size_t errlen)
{
	char *text = NULL, *outbuf = NULL;
	size_t len = 0, add = 1024;
	int rc = -1, n;

	if (fg_read_file(conf, 1024 * 1024, &text, &len, err, errlen) != 0)
		goto out;
	outbuf = malloc(len + add);
	if (outbuf == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	memcpy(outbuf, text, len);
	n = snprintf(outbuf + len, add,
		     "\n-- fleetgate-bench --mode scep: the scepserver it started\n"
		     "backends[\"scep\"] = { plugin = \"scep\", url = \"%s\",\n"
		     "  ca_fingerprint = \"%s\", challenge = \"%s\" }\n"
		     "profiles.default.backend = \"scep\"\n",
		     ca->url, ca->fingerprint, ca->challenge);
	if (n < 0 || (size_t)n >= add) {
		fg_seterr(err, errlen, "SCEP backend settings too long for %s", conf);
		goto out;
	}
	if (fg_write_file_atomic(conf, outbuf, len + (size_t)n, 0640, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	if (outbuf != NULL)
		OPENSSL_cleanse(outbuf, len + add);
	free(outbuf);
	free(text);
	return rc;
}

/* ---- acme mode: pebble and lego ---- */

/* Run argv and fail with its stderr when it exits non-zero. */
static int run_checked(char *const argv[], char *err, size_t errlen)
{
	char out[BENCH_OUTPUT_MAX], errout[BENCH_OUTPUT_MAX];
	int r = run_capture(argv, out, sizeof out, errout, sizeof errout, err, errlen);
	if (r > 0) {
		chomp(errout);
		fg_seterr(err, errlen, "%s failed (exit %d): %s", argv[0], r, errout);
	}
	return r == 0 ? 0 : -1;
}

/* Start Debian's pebble on free loopback ports in <tmp>/acme, as the
 * integration tests do: a throwaway TLS CA and a certificate for
 * localhost/127.0.0.1 made with openssl (the package ships none), and
 * PEBBLE_VA_NOSLEEP=1 PEBBLE_VA_ALWAYS_VALID=1 (nothing serves challenges
 * yet: docs/acme.md). LEGO_CA_CERTIFICATES is set to the TLS CA for the
 * lego runs. On failure the caller still calls acme_ca_stop. */
static int acme_ca_start(struct upstream *ca, const char *tmp, char *err, size_t errlen)
{
	char openssl[PATH_MAX], cakey[PATH_MAX + 32], key[PATH_MAX + 32], csr[PATH_MAX + 32], crt[PATH_MAX + 32];
	char ext[PATH_MAX + 32], conf[PATH_MAX + 32], srl[PATH_MAX + 32], json[2 * PATH_MAX + 512], tail[400];
	int port, mgmt, hport, tport, status;

	ca->acme = 1;
	if (find_program("pebble", ca->server, sizeof ca->server) != 0 ||
	    find_program("lego", ca->client, sizeof ca->client) != 0 ||
	    find_program("openssl", openssl, sizeof openssl) != 0) {
		fg_seterr(err, errlen, "--mode acme needs pebble, lego and openssl in PATH "
			  "(Debian: apt-get install pebble lego openssl)");
		return -1;
	}
	if (fg_path_join(tmp, "acme", ca->dir, sizeof ca->dir) != 0 ||
	    fg_mkdirs(ca->dir, 0700, err, errlen) != 0) {
		if (!err[0])
			fg_seterr(err, errlen, "temp dir path %s is too long", tmp);
		return -1;
	}
	snprintf(cakey, sizeof cakey, "%s/tls-ca.key", ca->dir);
	snprintf(ca->tls_ca, sizeof ca->tls_ca, "%s/tls-ca.pem", ca->dir);
	snprintf(key, sizeof key, "%s/key.pem", ca->dir);
	snprintf(csr, sizeof csr, "%s/srv.csr", ca->dir);
	snprintf(crt, sizeof crt, "%s/cert.pem", ca->dir);
	snprintf(ext, sizeof ext, "%s/ext", ca->dir);
	snprintf(srl, sizeof srl, "%s/tls-ca.srl", ca->dir);
	snprintf(conf, sizeof conf, "%s/pebble.json", ca->dir);
	snprintf(ca->log, sizeof ca->log, "%s/pebble.log", ca->dir);
	static const char sanext[] = "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
	char *mkca[] = { openssl, (char *)"req", (char *)"-x509", (char *)"-newkey", (char *)"ec", (char *)"-pkeyopt",
			 (char *)"ec_paramgen_curve:P-256", (char *)"-nodes", (char *)"-keyout", cakey, (char *)"-out",
			 ca->tls_ca, (char *)"-days", (char *)"2", (char *)"-subj",
			 (char *)"/CN=fleetgate-bench pebble TLS CA", NULL };
	char *mkcsr[] = { openssl, (char *)"req", (char *)"-newkey", (char *)"ec", (char *)"-pkeyopt",
			  (char *)"ec_paramgen_curve:P-256", (char *)"-nodes", (char *)"-keyout", key, (char *)"-out",
			  csr, (char *)"-subj", (char *)"/CN=localhost", NULL };
	char *sign[] = { openssl, (char *)"x509", (char *)"-req", (char *)"-in", csr, (char *)"-CA", ca->tls_ca,
			 (char *)"-CAkey", cakey, (char *)"-CAserial", srl, (char *)"-CAcreateserial", (char *)"-out",
			 crt, (char *)"-days", (char *)"2", (char *)"-extfile", ext, NULL };
	if (run_checked(mkca, err, errlen) != 0 || run_checked(mkcsr, err, errlen) != 0 ||
	    write_small_file(ext, sanext, sizeof sanext - 1, 0600, err, errlen) != 0 ||
	    run_checked(sign, err, errlen) != 0)
		return -1;
	if ((port = free_port(err, errlen)) < 0 || (mgmt = free_port(err, errlen)) < 0 ||
	    (hport = free_port(err, errlen)) < 0 || (tport = free_port(err, errlen)) < 0)
		return -1;
	if (mgmt == port || hport == port || tport == port || hport == mgmt || tport == mgmt || tport == hport) {
		fg_seterr(err, errlen, "could not draw four distinct free ports; run again");
		return -1;
	}
	int n = snprintf(json, sizeof json,
			 "{\"pebble\": {\"listenAddress\": \"127.0.0.1:%d\", \"managementListenAddress\": \"127.0.0.1:%d\",\n"
			 "  \"certificate\": \"%s\", \"privateKey\": \"%s\", \"httpPort\": %d, \"tlsPort\": %d,\n"
			 "  \"ocspResponderURL\": \"\", \"externalAccountBindingRequired\": false}}\n",
			 port, mgmt, crt, key, hport, tport);
	if (n < 0 || (size_t)n >= sizeof json || write_small_file(conf, json, (size_t)n, 0600, err, errlen) != 0) {
		if (!err[0])
			fg_seterr(err, errlen, "pebble config too long");
		return -1;
	}
	snprintf(ca->url, sizeof ca->url, "https://127.0.0.1:%d/dir", port);
	snprintf(ca->root_url, sizeof ca->root_url, "https://127.0.0.1:%d/roots/0", mgmt);
	/* inherited by pebble (and harmlessly by fleetgated and lego) */
	if (setenv("PEBBLE_VA_NOSLEEP", "1", 1) != 0 || setenv("PEBBLE_VA_ALWAYS_VALID", "1", 1) != 0 ||
	    setenv("PEBBLE_WFE_NONCEREJECT", "0", 1) != 0 || setenv("LEGO_CA_CERTIFICATES", ca->tls_ca, 1) != 0 ||
	    setenv("no_proxy", "*", 1) != 0 || setenv("NO_PROXY", "*", 1) != 0) {
		fg_seterr(err, errlen, "cannot set the environment for pebble and lego: %s", strerror(errno));
		return -1;
	}
	char *run_argv[] = { ca->server, (char *)"-config", conf, NULL };
	ca->pid = spawn_logged(run_argv, ca->dir, ca->log, err, errlen);
	if (ca->pid < 0) {
		ca->pid = 0;
		return -1;
	}
	uint64_t deadline = fg_mono_ns() + (uint64_t)BENCH_SCEP_READY_S * 1000000000ull;
	while (!port_open(port) || !port_open(mgmt)) {
		int exited = waitpid(ca->pid, &status, WNOHANG) == ca->pid;
		if (exited || fg_mono_ns() > deadline) {
			log_tail(ca->log, tail, sizeof tail);
			fg_seterr(err, errlen, "pebble on port %d %s (log %s): %s", port,
				  exited ? "exited before it listened" : "did not accept connections in 10 s", ca->log,
				  tail);
			if (exited)
				ca->pid = 0;
			return -1;
		}
		usleep(20000);
	}
	return 0;
}

/* Stop pebble (SIGTERM; nothing of its state is kept). */
static void acme_ca_stop(struct upstream *ca)
{
	if (ca->acme && ca->pid > 0) {
		kill(ca->pid, SIGTERM);
		waitpid(ca->pid, NULL, 0);
		ca->pid = 0;
	}
}

/* Add an `acme` backend for pebble to the fresh gateway's config and make
 * it the default profile's backend (see config_add_scep). */
static int config_add_acme(const char *conf, const struct upstream *ca, char *err, size_t errlen)
{
	char *text = NULL, *outbuf = NULL;
	size_t len = 0, add = 2048;
	int rc = -1, n;

	if (fg_read_file(conf, 1024 * 1024, &text, &len, err, errlen) != 0)
		goto out;
	if ((outbuf = malloc(len + add)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	memcpy(outbuf, text, len);
	/* the gateway publishes each http-01 answer on its HTTP side, as in
	 * production (pebble runs with PEBBLE_VA_ALWAYS_VALID, for lego too,
	 * so nothing fetches it) */
	int hport = free_port(err, errlen);
	if (hport < 0)
		goto out;
	n = snprintf(outbuf + len, add,
		     "\n-- fleetgate-bench --mode acme: the pebble it started\n"
		     "backends[\"acme\"] = { plugin = \"acme\", directory = \"%s\",\n"
		     "  tls_ca_file = \"%s\", root_url = \"%s\", poll_interval = 1 }\n"
		     "profiles.default.backend = \"acme\"\n"
		     "http = { listen = \"127.0.0.1:%d\" }\n",
		     ca->url, ca->tls_ca, ca->root_url, hport);
	if (n < 0 || (size_t)n >= add) {
		fg_seterr(err, errlen, "ACME backend settings too long for %s", conf);
		goto out;
	}
	if (fg_write_file_atomic(conf, outbuf, len + (size_t)n, 0640, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	free(outbuf);
	free(text);
	return rc;
}

/* ACME mode: one P-256 CSR per agent naming exactly what the default
 * policy decides for its hostname bench-<i> (an ACME CA copies the CSR). */
static int pool_build_acme(struct csr_pool *pool, int agents, char *err, size_t errlen)
{
	pool->per_agent = 1;
	if (pool_alloc(pool, agents, err, errlen) != 0)
		return -1;
	for (int i = 0; i < agents; i++) {
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

/* Before the direct clock starts: one lego run registers the account in
 * <acme dir>/lego that every measured run then reuses, as the gateway
 * reuses its one account. */
static int lego_account(const struct upstream *ca, char *err, size_t errlen)
{
	char lego_path[PATH_MAX + 16], webroot[PATH_MAX + 16], logpath[PATH_MAX + 32], tail[400];
	int status;
	snprintf(lego_path, sizeof lego_path, "%s/lego", ca->dir);
	snprintf(webroot, sizeof webroot, "%s/webroot", ca->dir);
	snprintf(logpath, sizeof logpath, "%s/lego-warmup.log", ca->dir);
	if (fg_mkdirs(webroot, 0700, err, errlen) != 0)
		return -1;
	char *argv[] = { (char *)ca->client, (char *)"--server", (char *)ca->url, (char *)"--accept-tos",
			 (char *)"--email", (char *)"bench@fleetgate.test", (char *)"--path", lego_path,
			 (char *)"--key-type", (char *)"ec256", (char *)"--domains", (char *)"warmup.test",
			 (char *)"--http", (char *)"--http.webroot", webroot, (char *)"run", NULL };
	pid_t pid = spawn_logged(argv, ca->dir, logpath, err, errlen);
	if (pid < 0)
		return -1;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_tail(logpath, tail, sizeof tail);
		fg_seterr(err, errlen, "lego's warm-up run against %s failed (log %s): %s", ca->url, logpath, tail);
		return -1;
	}
	return 0;
}

/* State the direct scepclient threads share. */
struct direct_shared {
	const struct upstream *ca;
	char base[PATH_MAX + 16];        /* <scep dir>/direct: one subdir per enrollment */
	long total;
	atomic_long next;
	atomic_long ok;
	atomic_long failed;
	uint64_t *lat;                   /* ns per enrollment, process start to exit */
	double *cpu;                     /* scepclient utime+stime per enrollment */
	char *done;                      /* 1 where scepclient wrote c.pem */
	pthread_mutex_t lock;            /* guards first_err */
	char first_err[512];
};

static void direct_failure(struct direct_shared *ds, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void direct_failure(struct direct_shared *ds, const char *fmt, ...)
{
	va_list ap;

	atomic_fetch_add(&ds->failed, 1);
	pthread_mutex_lock(&ds->lock);
	if (ds->first_err[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(ds->first_err, sizeof ds->first_err, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&ds->lock);
}

/* One of P runner threads: claim the next enrollment, run scepclient in its
 * directory (k.pem is there already; c.pem is what it must write) and wait
 * for it. The latency is the process's wall time: start-up, GetCACert,
 * GetCACaps and the PKIOperation. */
static void *direct_main(void *arg)
{
	struct direct_shared *ds = arg;
	const struct upstream *ca = ds->ca;

	for (;;) {
		long i = atomic_fetch_add(&ds->next, 1);
		char dir[PATH_MAX + 48], logpath[PATH_MAX + 80], crt[PATH_MAX + 200], cn[32], err[512] = "";
		char tail[400];
		struct rusage ru;
		struct stat st;
		int status;

		if (i >= ds->total)
			break;
		snprintf(dir, sizeof dir, "%s/%ld", ds->base, i);
		snprintf(logpath, sizeof logpath, "%s/%s.log", dir, ca->client_name);
		snprintf(crt, sizeof crt, "%s/c.pem", dir);
		snprintf(cn, sizeof cn, "direct-%ld", i);
		/* XXX the challenge in argv: scepclient has no other way. */
		char *argv[] = { (char *)ca->client, (char *)"-server-url", (char *)ca->url,
				 (char *)"-challenge", (char *)ca->challenge, (char *)"-private-key",
				 (char *)"k.pem", (char *)"-certificate", (char *)"c.pem", (char *)"-cn", cn, NULL };
		/* lego: the account made before the clock started (in the
		 * shared --path), a P-256 key made by lego for each
		 * certificate, http-01 "served" from a webroot that pebble
		 * (PEBBLE_VA_ALWAYS_VALID) does not read */
		char domain[48], lego_path[PATH_MAX + 16], webroot[PATH_MAX + 16];
		snprintf(domain, sizeof domain, "direct-%ld.test", i);
		snprintf(lego_path, sizeof lego_path, "%s/lego", ca->dir);
		snprintf(webroot, sizeof webroot, "%s/webroot", ca->dir);
		char *largv[] = { (char *)ca->client, (char *)"--server", (char *)ca->url, (char *)"--accept-tos",
				  (char *)"--email", (char *)"bench@fleetgate.test", (char *)"--path", lego_path,
				  (char *)"--key-type", (char *)"ec256", (char *)"--domains", domain, (char *)"--http",
				  (char *)"--http.webroot", webroot, (char *)"run", NULL };
		if (ca->acme)
			snprintf(crt, sizeof crt, "%s/certificates/%s.crt", lego_path, domain);
		uint64_t t0 = fg_mono_ns();
		pid_t pid = spawn_logged(ca->acme ? largv : argv, dir, logpath, err, sizeof err);
		if (pid < 0) {
			direct_failure(ds, "%s", err);
			continue;
		}
		while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
			;
		ds->lat[i] = fg_mono_ns() - t0;
		ds->cpu[i] = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && stat(crt, &st) == 0 && st.st_size > 0) {
			ds->done[i] = 1;
			atomic_fetch_add(&ds->ok, 1);
			continue;
		}
		log_tail(logpath, tail, sizeof tail);
		if (WIFEXITED(status))
			direct_failure(ds, "%s in %s exited %d%s: %s", ca->client_name, dir, WEXITSTATUS(status),
				       WEXITSTATUS(status) == 0 ? " but wrote no certificate" : "", tail);
		else
			direct_failure(ds, "%s in %s was killed by signal %d: %s", ca->client_name, dir,
				       WIFSIGNALED(status) ? WTERMSIG(status) : 0, tail);
	}
	return NULL;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* scepclient does not notice when the CA hands two certificates the same
 * serial (scepserver's file depot does, with concurrent requests: it reads
 * and rewrites its serial file without a lock), but the gateway refuses the
 * second one. So that both sides count alike, read the serial of every
 * certificate written and count each repeat as a failure, not a success.
 * Runs after the clock stopped. Returns -1 only when out of memory. */
static int direct_duplicates(struct direct_shared *ds, struct direct_results *d)
{
	char **serials = calloc((size_t)ds->total, sizeof *serials);
	long n = 0, dups = 0;

	if (serials == NULL)
		return -1;
	for (long i = 0; i < ds->total; i++) {
		char crt[PATH_MAX + 80];
		X509 *x = NULL;
		FILE *f;
		if (!ds->done[i])
			continue;
		snprintf(crt, sizeof crt, "%s/%ld/c.pem", ds->base, i);
		f = fopen(crt, "re");
		if (f != NULL) {
			x = PEM_read_X509(f, NULL, NULL, NULL);
			fclose(f);
		}
		if (x == NULL) {
			ds->done[i] = 0;
			d->ok--;
			direct_failure(ds, "scepclient wrote %s but it holds no PEM certificate", crt);
			continue;
		}
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
		serials[n] = bn ? BN_bn2hex(bn) : NULL;
		BN_free(bn);
		X509_free(x);
		if (serials[n] == NULL) {
			for (long k = 0; k < n; k++)
				OPENSSL_free(serials[k]);
			free(serials);
			return -1;
		}
		n++;
	}
	qsort(serials, (size_t)n, sizeof *serials, cmp_str);
	for (long i = 1; i < n; i++) {
		if (strcmp(serials[i], serials[i - 1]) != 0)
			continue;
		if (dups++ == 0)
			direct_failure(ds, "scepserver issued serial %s to more than one certificate (its file depot "
				       "is not safe with concurrent requests: use --direct-parallel 1)", serials[i]);
		else
			atomic_fetch_add(&ds->failed, 1);
	}
	d->ok -= dups;
	for (long k = 0; k < n; k++)
		OPENSSL_free(serials[k]);
	free(serials);
	return 0;
}

/* Direct baseline: o->direct_requests scepclient enrollments against the
 * same scepserver, o->direct_parallel at a time. Every enrollment gets a
 * fresh directory holding a copy of a pre-made key (scepclient keeps a
 * self-signed certificate in its working directory and would reuse it), all
 * made before the clock starts. Returns -1 when the phase could not run;
 * failed enrollments are counted in d, not errors. */
static int direct_run(const struct bench_opts *o, const struct upstream *ca, struct direct_results *d,
		      char *err, size_t errlen)
{
	struct direct_shared *ds = NULL;
	pthread_t *threads = NULL;
	char *pem[BENCH_SCEP_KEYS] = { NULL };
	size_t pemlen[BENCH_SCEP_KEYS] = { 0 };
	int started = 0, rc = -1;
	double cpu = 0, up0, up1;
	uint64_t t0, t1;

	ds = calloc(1, sizeof *ds);
	if (ds != NULL)
		pthread_mutex_init(&ds->lock, NULL);
	threads = calloc((size_t)o->direct_parallel, sizeof *threads);
	if (ds == NULL || threads == NULL ||
	    (ds->lat = calloc((size_t)o->direct_requests, sizeof *ds->lat)) == NULL ||
	    (ds->cpu = calloc((size_t)o->direct_requests, sizeof *ds->cpu)) == NULL ||
	    (ds->done = calloc((size_t)o->direct_requests, 1)) == NULL) {
		fg_seterr(err, errlen, "out of memory for %ld direct enrollments", o->direct_requests);
		goto out;
	}
	ds->ca = ca;
	ds->total = o->direct_requests;
	snprintf(ds->base, sizeof ds->base, "%s/direct", ca->dir);
	/* scepclient reads PKCS#1 ("RSA PRIVATE KEY") PEM. (acme: no keys,
	 * lego makes its own; nkeys is 0) */
	for (int k = 0; k < ca->nkeys; k++) {
		BIO *b = BIO_new(BIO_s_mem());
		char *data;
		long n;
		if (b == NULL || !PEM_write_bio_PrivateKey_traditional(b, ca->keys[k], NULL, NULL, 0, NULL, NULL) ||
		    (n = BIO_get_mem_data(b, &data)) <= 0 || (pem[k] = malloc((size_t)n)) == NULL) {
			fg_ssl_err(err, errlen, "cannot write an RSA key as PEM for scepclient");
			BIO_free(b);
			goto out;
		}
		memcpy(pem[k], data, (size_t)n);
		pemlen[k] = (size_t)n;
		BIO_free(b);
	}
	for (long i = 0; i < o->direct_requests; i++) {
		char dir[PATH_MAX + 48], key[PATH_MAX + 80];
		snprintf(dir, sizeof dir, "%s/%ld", ds->base, i);
		snprintf(key, sizeof key, "%s/k.pem", dir);
		if (fg_mkdirs(dir, 0700, err, errlen) != 0 ||
		    (!ca->acme &&
		     write_small_file(key, pem[i % ca->nkeys], pemlen[i % ca->nkeys], 0600, err, errlen) != 0))
			goto out;
	}
	if (ca->acme && lego_account(ca, err, errlen) != 0)
		goto out;

	up0 = proc_cpu_s(ca->pid);
	t0 = fg_mono_ns();
	for (; started < o->direct_parallel; started++) {
		if (pthread_create(&threads[started], NULL, direct_main, ds) != 0) {
			/* The threads already running finish the whole total. */
			if (started == 0) {
				fg_seterr(err, errlen, "cannot start a %s runner thread", ca->client_name);
				goto out;
			}
			break;
		}
	}
	for (int t = 0; t < started; t++)
		pthread_join(threads[t], NULL);
	t1 = fg_mono_ns();
	up1 = proc_cpu_s(ca->pid);

	d->requests = o->direct_requests;
	d->parallel = started;
	d->ok = atomic_load(&ds->ok);
	if (!ca->acme && direct_duplicates(ds, d) != 0) {
		fg_strlcpy(err, "out of memory checking the direct certificates' serials", errlen);
		goto out;
	}
	d->failed = d->requests - d->ok;
	d->wall_s = (double)(t1 - t0) / 1e9;
	d->rate = d->wall_s > 0 ? (double)d->ok / d->wall_s : 0;
	for (long i = 0; i < d->requests; i++)
		cpu += ds->cpu[i];
	d->client_cpu_per = d->ok > 0 ? cpu / (double)d->ok : 0;
	d->ca_cpu_per = d->ok > 0 && up0 >= 0 && up1 >= 0 ? (up1 - up0) / (double)d->ok : -1;
	fg_strlcpy(d->first_err, ds->first_err, sizeof d->first_err);
	/* Every run that was started has a wall time, failed or not. */
	qsort(ds->lat, (size_t)d->requests, sizeof *ds->lat, cmp_u64);
	long first = 0;
	while (first < d->requests && ds->lat[first] == 0)
		first++;
	long n = d->requests - first;
	d->p50_ms = pct_ms(ds->lat + first, n, 0.50);
	d->p90_ms = pct_ms(ds->lat + first, n, 0.90);
	d->p99_ms = pct_ms(ds->lat + first, n, 0.99);
	d->max_ms = n > 0 ? (double)ds->lat[d->requests - 1] / 1e6 : 0;
	rc = 0;
out:
	for (int k = 0; k < BENCH_SCEP_KEYS; k++) {
		if (pem[k] != NULL)
			OPENSSL_cleanse(pem[k], pemlen[k]);
		free(pem[k]);
	}
	if (ds != NULL) {
		pthread_mutex_destroy(&ds->lock);
		free(ds->lat);
		free(ds->cpu);
		free(ds->done);
	}
	free(ds);
	free(threads);
	return rc;
}

/* ---- report ---- */

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

/* Scep mode: gateway and direct scepclient side by side, and the ratios. */
static void report_scep_text(const struct results *r)
{
	const struct direct_results *d = &r->direct;
	char a[64], b[64];

	printf("  gateway RSS at the end:    %ld KiB\n", r->rss_kib);
	char hd[64], cpu_label[64];
	if (r->ca->acme)
		printf("ACME upstream: pebble at %s (PEBBLE_VA_ALWAYS_VALID); P-256 keys on both sides\n", r->ca->url);
	else
		printf("SCEP upstream: scepserver at %s (RSA-2048 CA); RSA-2048 keys on both sides\n", r->ca->url);
	snprintf(hd, sizeof hd, "%s direct", r->ca->client_name);
	printf("                             %-24s %s\n", "through the gateway", hd);
	snprintf(a, sizeof a, "%d agents", r->agents);
	snprintf(b, sizeof b, "%d processes", d->parallel);
	printf("  concurrency:               %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%ld", r->requests);
	snprintf(b, sizeof b, "%ld", d->requests);
	printf("  enrollments:               %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%ld", r->failed);
	snprintf(b, sizeof b, "%ld", d->failed);
	printf("  failed:                    %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%.3f s", r->wall_s);
	snprintf(b, sizeof b, "%.3f s", d->wall_s);
	printf("  wall time:                 %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%.1f", r->rate);
	snprintf(b, sizeof b, "%.1f", d->rate);
	printf("  enrollments/s:             %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%.1f / %.1f / %.1f", r->p50_ms, r->p90_ms, r->p99_ms);
	snprintf(b, sizeof b, "%.1f / %.1f / %.1f", d->p50_ms, d->p90_ms, d->p99_ms);
	printf("  latency p50/p90/p99 ms:    %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%.1f", r->max_ms);
	snprintf(b, sizeof b, "%.1f", d->max_ms);
	printf("  latency max ms:            %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%.0f us", r->ca_cpu_per * 1e6);
	snprintf(b, sizeof b, "%.0f us", d->ca_cpu_per * 1e6);
	snprintf(cpu_label, sizeof cpu_label, "%s CPU/enrollment:", r->ca->server_name);
	printf("  %-26s %-24s %s\n", cpu_label, r->ca_cpu_per >= 0 ? a : "n/a", d->ca_cpu_per >= 0 ? b : "n/a");
	snprintf(a, sizeof a, "%.0f us fleetgated", r->gw_cpu_per * 1e6);
	snprintf(b, sizeof b, "%.0f us %s", d->client_cpu_per * 1e6, r->ca->client_name);
	printf("  client-side CPU/enroll.:   %-24s %s\n", a, b);
	snprintf(a, sizeof a, "%.0f us bench", r->client_cpu_per * 1e6);
	printf("                             %s\n", a);
	if (d->failed)
		printf("  first direct failure:      %s\n", d->first_err);
	if (!r->ca->acme && (r->workers > 1 || d->parallel > 1))
		printf("  note: scepserver's file depot is not safe with concurrent requests (duplicate serials,\n"
		       "        badRequest); failures above may be its own, see docs/benchmarks.md\n");
	printf("  ratio gateway/direct:      throughput %.2f, p50 latency %.2f\n", ratio(r->rate, d->rate),
	       ratio(r->p50_ms, d->p50_ms));
}

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
	if (r->offered_rate > 0)
		printf("  open loop:                 offered %.0f/s (%s arrivals), %ld sent more than 2 ms late;\n"
		       "                             latency counts from each request's scheduled time\n",
		       r->offered_rate, r->poisson ? "Poisson" : "even", r->late);
	printf("  enrollments/s:             %.0f\n", r->rate);
	printf("  latency ms:                p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", r->p50_ms,
	       r->p90_ms, r->p99_ms, r->p999_ms, r->max_ms);
	if (r->ok > 0) {
		printf("  gateway CPU:               %.2f s, %.1f us per enrollment (all its processes; signer %.1f us)\n",
		       r->gw_cpu_s, r->gw_cpu_per * 1e6, r->signer_cpu_per * 1e6);
		printf("  bench client CPU:          %.1f us per enrollment (same machine, competes for the cores)\n",
		       r->client_cpu_per * 1e6);
	} else {
		printf("  gateway CPU:               %.2f s, per enrollment n/a (none succeeded)\n", r->gw_cpu_s);
	}
	if (r->mode == BENCH_MODE_SCEP || r->mode == BENCH_MODE_ACME) {
		report_scep_text(r);
		return;
	}
	printf("  bare crypto:               %.1f us per enrollment (CSR verify %.1f + certificate sign %.1f)\n",
	       r->bare_per * 1e6, r->verify_per * 1e6, r->certsign_per * 1e6);
	printf("  raw ECDSA P-256:           sign %.1f us (%.0f/s), verify %.1f us (%.0f/s)\n",
	       r->ecdsa_sign_per * 1e6, r->ecdsa_sign_per > 0 ? 1 / r->ecdsa_sign_per : 0,
	       r->ecdsa_verify_per * 1e6, r->ecdsa_verify_per > 0 ? 1 / r->ecdsa_verify_per : 0);
	if (r->ok > 0)
		printf("  ratio gateway/bare:        %.2f\n", r->bare_per > 0 ? r->gw_cpu_per / r->bare_per : 0);
	printf("  gateway RSS at the end:    %ld KiB\n", r->rss_kib);
	if (r->mode == BENCH_MODE_EST) {
		const struct est_bench_results *e = &r->est;
		printf("EST front-end (same gateway, same local CA): %d client connection%s, %ld enrollments\n",
		       e->clients, e->clients == 1 ? "" : "s", e->requests);
		printf("  failed:                    %ld", e->failed);
		if (e->failed)
			printf("\n  first failure:             %s", e->first_err);
		printf("\n  wall time:                 %.3f s\n", e->wall_s);
		printf("  enrollments/s:             %.0f\n", e->rate);
		printf("  latency ms:                p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", e->p50_ms,
		       e->p90_ms, e->p99_ms, e->max_ms);
		printf("  gateway CPU:               %.2f s, %.1f us per enrollment\n", e->gw_cpu_s,
		       e->gw_cpu_per * 1e6);
		printf("  ratio EST/ZeroMQ:          throughput %.2f, gateway CPU per enrollment %.2f\n",
		       ratio(e->rate, r->rate), ratio(e->gw_cpu_per, r->gw_cpu_per));
	}
}

/* Scep mode in the JSON report: the local-CA bare-crypto keys go, and
 * "mode", the scepserver CPU, a "direct" object and the two ratios come in. */
static int scep_json(json_t *o, const struct results *r)
{
	static const char *const local_only[] = { "bare_crypto_s_per_enrollment", "csr_verify_s", "cert_sign_s",
						  "ecdsa_p256_sign_s", "ecdsa_p256_verify_s", "ratio_gateway_to_bare" };
	const struct direct_results *d = &r->direct;
	char ckey[64], skey[64];
	json_t *dj;

	snprintf(ckey, sizeof ckey, "%s_cpu_s_per_enrollment", r->ca->client_name);
	snprintf(skey, sizeof skey, "%s_cpu_s_per_enrollment", r->ca->server_name);
	for (size_t i = 0; i < sizeof local_only / sizeof local_only[0]; i++)
		json_object_del(o, local_only[i]);
	dj = json_pack("{s:I, s:i, s:I, s:s?, s:f, s:f, s:{s:f, s:f, s:f, s:f}, s:f, s:f}",
		       "requests", (json_int_t)d->requests,
		       "parallel", d->parallel,
		       "failed", (json_int_t)d->failed,
		       "first_failure", d->failed ? d->first_err : NULL,
		       "wall_s", d->wall_s,
		       "enrollments_per_s", d->rate,
		       "latency_ms", "p50", d->p50_ms, "p90", d->p90_ms, "p99", d->p99_ms, "max", d->max_ms,
		       ckey, d->client_cpu_per,
		       skey, d->ca_cpu_per);
	if (dj == NULL ||
	    json_object_set_new(o, "mode", json_string(r->ca->acme ? "acme" : "scep")) != 0 ||
	    json_object_set_new(o, r->ca->acme ? "acme_directory" : "scep_url", json_string(r->ca->url)) != 0 ||
	    json_object_set_new(o, skey, json_real(r->ca_cpu_per)) != 0 ||
	    json_object_set_new(o, "direct", dj) != 0 ||
	    json_object_set_new(o, "ratio_throughput_gateway_to_direct", json_real(ratio(r->rate, d->rate))) != 0 ||
	    json_object_set_new(o, "ratio_p50_gateway_to_direct", json_real(ratio(r->p50_ms, d->p50_ms))) != 0)
		return -1;
	return 0;
}

/* The same figures as one JSON object on one line (seconds and ms as
 * floats, so scripts need not parse units). */
static int report_json(const struct results *r)
{
	json_t *o = json_pack(
		"{s:i, s:I, s:I, s:s?, s:I, s:i, s:i, s:f, s:f, s:{s:f, s:f, s:f, s:f, s:f}, s:f, s:f, s:f, s:f, "
		"s:f, s:f, s:f, s:f, s:f, s:f, s:I}",
		"agents", r->agents,
		"requests", (json_int_t)r->requests,
		"failed", (json_int_t)r->failed,
		"first_failure", r->bad ? r->first_err : NULL,
		"unsent", (json_int_t)r->unsent,
		"workers", r->workers,
		"client_threads", r->client_threads,
		"wall_s", r->wall_s,
		"enrollments_per_s", r->rate,
		"latency_ms", "p50", r->p50_ms, "p90", r->p90_ms, "p99", r->p99_ms, "p999", r->p999_ms,
		"max", r->max_ms,
		"gateway_cpu_s", r->gw_cpu_s,
		"gateway_cpu_s_per_enrollment", r->gw_cpu_per,
		"client_cpu_s_per_enrollment", r->client_cpu_per,
		"bare_crypto_s_per_enrollment", r->bare_per,
		"csr_verify_s", r->verify_per,
		"cert_sign_s", r->certsign_per,
		"ecdsa_p256_sign_s", r->ecdsa_sign_per,
		"ecdsa_p256_verify_s", r->ecdsa_verify_per,
		"signer_cpu_s_per_enrollment", r->signer_cpu_per,
		"ratio_gateway_to_bare", r->bare_per > 0 ? r->gw_cpu_per / r->bare_per : 0.0,
		"gateway_rss_kib", (json_int_t)r->rss_kib);
	if (o == NULL)
		return -1;
	json_t *hist = json_array();
	for (long i = 0; hist != NULL && i < r->hist_n; i++)
		if (json_array_append_new(hist, json_pack("[f, I]", r->hist_le_ms[i], (json_int_t)r->hist_count[i])) != 0) {
			json_decref(hist);
			hist = NULL;
		}
	if (hist == NULL || json_object_set_new(o, "latency_histogram_ms", hist) != 0 ||
	    json_object_set_new(o, "loop", json_string(r->offered_rate > 0 ? "open" : "closed")) != 0 ||
	    (r->offered_rate > 0 &&
	     (json_object_set_new(o, "offered_per_s", json_real(r->offered_rate)) != 0 ||
	      json_object_set_new(o, "arrivals", json_string(r->poisson ? "poisson" : "even")) != 0 ||
	      json_object_set_new(o, "sent_late", json_integer(r->late)) != 0))) {
		json_decref(o);
		return -1;
	}
	if ((r->mode == BENCH_MODE_SCEP || r->mode == BENCH_MODE_ACME) && scep_json(o, r) != 0) {
		json_decref(o);
		return -1;
	}
	if (r->mode == BENCH_MODE_EST) {
		const struct est_bench_results *e = &r->est;
		json_t *ej = json_pack("{s:I, s:i, s:I, s:s?, s:f, s:f, s:{s:f, s:f, s:f, s:f}, s:f, s:f}",
				       "requests", (json_int_t)e->requests, "clients", e->clients,
				       "failed", (json_int_t)e->failed,
				       "first_failure", e->failed ? e->first_err : NULL,
				       "wall_s", e->wall_s, "enrollments_per_s", e->rate,
				       "latency_ms", "p50", e->p50_ms, "p90", e->p90_ms, "p99", e->p99_ms,
				       "max", e->max_ms,
				       "gateway_cpu_s", e->gw_cpu_s,
				       "gateway_cpu_s_per_enrollment", e->gw_cpu_per);
		if (ej == NULL || json_object_set_new(o, "mode", json_string("est")) != 0 ||
		    json_object_set_new(o, "est", ej) != 0 ||
		    json_object_set_new(o, "ratio_throughput_est_to_zmq", json_real(ratio(e->rate, r->rate))) != 0 ||
		    json_object_set_new(o, "ratio_cpu_est_to_zmq", json_real(ratio(e->gw_cpu_per, r->gw_cpu_per))) != 0) {
			json_decref(o);
			return -1;
		}
	}
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
		"                       [--rate R [--poisson]]\n"
		"       fleetgate-bench --mode scep|acme [--agents N] [--requests M] [--workers W]\n"
		"                       [--direct-requests M2] [--direct-parallel P] [--json] [--keep]\n"
		"\n"
		"Start a gateway with a fresh local P-256 CA, enroll N simulated agents once\n"
		"with a token, then measure M more enrollments (no token) from all of them at\n"
		"once. Defaults: 100 agents, 2000 requests, 16 workers, 2000 crypto iterations.\n"
		"  --state DIR   use this existing gateway dir (made by fleetgate init) as is;\n"
		"                it is kept, and --workers does not change it\n"
		"  --bin-dir DIR where fleetgate and fleetgated are (default: ../gateway next\n"
		"                to this program, as in the build tree)\n"
		"  --keep        keep the temp gateway dir (store, log) after the run\n"
		"  --rate R      open loop: offer R enrollments/s in all, whether or not the\n"
		"                gateway keeps up; an arrival waits for an idle agent, and its\n"
		"                latency counts from its scheduled time (coordinated omission\n"
		"                corrected). Even gaps, or --poisson for exponential ones\n"
		"  --mode scep   instead: run scepserver (Debian package scep) with a fresh\n"
		"                RSA-2048 CA, make it the gateway's default backend, measure\n"
		"                M enrollments through the gateway with RSA-2048 CSRs, then\n"
		"                M2 scepclient enrollments straight to scepserver, P at a\n"
		"                time, and report both and their ratios. Defaults:\n"
		"                M2 = min(M, %d), P = 1 and W = 1, because scepserver's\n"
		"                file depot mixes up serials under concurrent requests\n"
		"  --mode est    the local-mode run, then M simpleenroll requests through the\n"
		"                gateway's EST front-end (fleetgate init --est) from C client\n"
		"                connections (--est-clients C, default 4), reported side by\n"
		"                side with the ZeroMQ figures\n"
		"  --mode acme   instead: run pebble (Debian package pebble) with\n"
		"                PEBBLE_VA_ALWAYS_VALID and a throwaway TLS CA, make an acme\n"
		"                backend for it the default, measure M enrollments through\n"
		"                the gateway with P-256 CSRs, then M2 lego runs (package\n"
		"                lego) straight to pebble, P at a time, with one account;\n"
		"                report both and their ratios. Defaults: M2 = min(M, %d),\n"
		"                P = 1, W = 2\n", BENCH_DIRECT_MAX, BENCH_DIRECT_MAX);
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
		{ "mode", required_argument, NULL, 'm' },
		{ "direct-requests", required_argument, NULL, 'D' },
		{ "direct-parallel", required_argument, NULL, 'P' },
		{ "est-clients", required_argument, NULL, 'E' },
		{ "rate", required_argument, NULL, 'R' },
		{ "poisson", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_opts o = { .agents = 100, .requests = 2000, .crypto_iters = 2000 };
	struct gateway gw;
	struct csr_pool pool;
	struct results res;
	struct upstream ca;
	struct rlimit rl;
	EVP_PKEY *ca_key = NULL;
	char err[1024] = "", token[64] = "";
	int c, rc = 1;
	long v;

	memset(&gw, 0, sizeof gw);
	memset(&pool, 0, sizeof pool);
	memset(&res, 0, sizeof res);
	memset(&ca, 0, sizeof ca);
	while ((c = getopt_long(argc, argv, "a:r:w:s:b:c:jkhm:D:P:E:R:p", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (strcmp(optarg, "local") == 0) {
				o.mode = BENCH_MODE_LOCAL;
			} else if (strcmp(optarg, "scep") == 0) {
				o.mode = BENCH_MODE_SCEP;
			} else if (strcmp(optarg, "est") == 0) {
				o.mode = BENCH_MODE_EST;
			} else if (strcmp(optarg, "acme") == 0) {
				o.mode = BENCH_MODE_ACME;
			} else {
				fprintf(stderr, "fleetgate-bench: --mode '%s' is unknown; use local, scep, est or acme\n", optarg);
				return 2;
			}
			break;
		case 'E':
			v = parse_num(optarg, 1, 256);
			if (v < 0) {
				fprintf(stderr, "fleetgate-bench: --est-clients '%s' is out of range (1..256)\n", optarg);
				return 2;
			}
			o.est_clients = (int)v;
			break;
		case 'D':
		case 'P':
			v = parse_num(optarg, 1, c == 'D' ? 1000000 : 256);
			if (v < 0) {
				fprintf(stderr, "fleetgate-bench: --%s '%s' is out of range (1..%d)\n",
					c == 'D' ? "direct-requests" : "direct-parallel", optarg, c == 'D' ? 1000000 : 256);
				return 2;
			}
			if (c == 'D')
				o.direct_requests = v;
			else
				o.direct_parallel = (int)v;
			break;
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
		case 'R': {
			char *end;
			errno = 0;
			o.rate = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o.rate >= 1 && o.rate <= 10000000)) {
				fprintf(stderr, "fleetgate-bench: --rate '%s' is not a number of requests per second in 1..10000000\n",
					optarg);
				return 2;
			}
			break;
		}
		case 'p': o.poisson = 1; break;
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
	int upstream = o.mode == BENCH_MODE_SCEP || o.mode == BENCH_MODE_ACME;
	if (!upstream && (o.direct_requests || o.direct_parallel)) {
		fprintf(stderr, "fleetgate-bench: --direct-requests and --direct-parallel only apply to --mode scep or acme\n");
		return 2;
	}
	if (o.mode != BENCH_MODE_EST && o.est_clients) {
		fprintf(stderr, "fleetgate-bench: --est-clients only applies to --mode est\n");
		return 2;
	}
	if (o.mode == BENCH_MODE_EST && o.state != NULL) {
		fprintf(stderr, "fleetgate-bench: --mode est makes its own gateway with the EST front-end; "
			"leave out --state\n");
		return 2;
	}
	if (o.est_clients == 0)
		o.est_clients = 4;
	if (upstream && o.state != NULL) {
		fprintf(stderr, "fleetgate-bench: --mode %s makes its own gateway and backend; leave out --state\n",
			o.mode == BENCH_MODE_SCEP ? "scep" : "acme");
		return 2;
	}
	/* scepserver 2.1.0 (Debian's) keeps its next serial in a file that it
	 * reads and rewrites without a lock: two requests at once can get the
	 * same serial or fail with badRequest, and a late rewrite can move the
	 * serial back. So scep mode sends it one request at a time on both
	 * sides unless told otherwise: one gateway worker (a worker waits for
	 * its SCEP exchange) and one scepclient at a time. */
	if (o.workers == 0)
		o.workers = o.mode == BENCH_MODE_SCEP ? 1 : o.mode == BENCH_MODE_ACME ? 2 : 16;
	if (upstream) {
		if (o.direct_requests == 0)
			o.direct_requests = o.requests < BENCH_DIRECT_MAX ? o.requests : BENCH_DIRECT_MAX;
		if (o.direct_parallel == 0)
			o.direct_parallel = 1;
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
	if (o.mode == BENCH_MODE_SCEP) {
		char conf[PATH_MAX + 32];
		snprintf(conf, sizeof conf, "%s/fleetgated.conf", gw.state);
		ca.server_name = "scepserver";
		ca.client_name = "scepclient";
		if (scep_ca_start(&ca, gw.tmp, err, sizeof err) != 0 ||
		    config_add_scep(conf, &ca, err, sizeof err) != 0)
			goto out;
		gw.upstream_pid = ca.pid;
	} else if (o.mode == BENCH_MODE_ACME) {
		char conf[PATH_MAX + 32];
		snprintf(conf, sizeof conf, "%s/fleetgated.conf", gw.state);
		ca.server_name = "pebble";
		ca.client_name = "lego";
		if (acme_ca_start(&ca, gw.tmp, err, sizeof err) != 0 ||
		    config_add_acme(conf, &ca, err, sizeof err) != 0)
			goto out;
		gw.upstream_pid = ca.pid;
	}
	if (gateway_read_state(&gw, err, sizeof err) != 0)
		goto out;
	if (gateway_start(&gw, &o, err, sizeof err) != 0)
		goto out;
	if (gateway_token(&gw, &o, o.agents, token, err, sizeof err) != 0)
		goto out;
	if (o.mode == BENCH_MODE_SCEP   ? pool_build_scep(&pool, o.agents, &ca, err, sizeof err) != 0
	    : o.mode == BENCH_MODE_ACME ? pool_build_acme(&pool, o.agents, err, sizeof err) != 0
					: pool_build(&pool, err, sizeof err) != 0)
		goto out;
	if (bench_run(&o, &gw, token, &pool, &res, err, sizeof err) != 0)
		goto out;
	res.workers = gw.workers;
	res.mode = o.mode;
	if (upstream) {
		res.ca = &ca;
		if (direct_run(&o, &ca, &res.direct, err, sizeof err) != 0)
			goto out;
	} else {
		ca_key = bench_ca_key(&gw, err, sizeof err);
		if (ca_key == NULL || bare_crypto(&pool, ca_key, o.crypto_iters, &res, err, sizeof err) != 0)
			goto out;
	}
	if (o.mode == BENCH_MODE_EST) {
		char cafile[PATH_MAX + 16];
		OPENSSL_cleanse(token, sizeof token);
		snprintf(cafile, sizeof cafile, "%s/ca/ca.crt", gw.state);
		if (gateway_token(&gw, &o, o.requests, token, err, sizeof err) != 0 ||
		    est_bench_run(gw.est_url, cafile, token, o.est_clients, o.requests, gw.pid, &res.est,
				  err, sizeof err) != 0)
			goto out;
	}
	if (o.json ? report_json(&res) != 0 : (report_text(&res), 0)) {
		fg_seterr(err, sizeof err, "cannot write the JSON report");
		goto out;
	}
	fflush(stdout);
	rc = res.failed > 0 || res.direct.failed > 0 || res.est.failed > 0 ? 1 : 0;
	err[0] = '\0';
out:
	if (err[0])
		fprintf(stderr, "fleetgate-bench: %s\n", err);
	OPENSSL_cleanse(token, sizeof token);
	EVP_PKEY_free(ca_key);
	pool_free(&pool);
	gateway_stop(&gw);
	if (ca.acme)
		acme_ca_stop(&ca);
	else
		scep_ca_stop(&ca);
	if (gw.tmp[0]) {
		if (o.keep || rc != 0)
			fprintf(stderr, "fleetgate-bench: gateway state and log kept in %s\n", gw.tmp);
		else if (nftw(gw.tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
			fprintf(stderr, "fleetgate-bench: cannot remove %s: %s\n", gw.tmp, strerror(errno));
	}
	return rc;
}
