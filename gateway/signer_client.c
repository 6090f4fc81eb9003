/*
 * signer_client.c: the monitor process and the daemon's requests to the
 * signer (signer_client.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fg_log.h"
#include "fg_util.h"
#include "signer.h"
#include "signer.pb-c.h"
#include "signer_client.h"
#include "signer_ipc.h"
#include "stats.h"

#define CTL_FD 3                   /* the monitor's control socket */
#define IO_TIMEOUT_S 10            /* a signer that does not answer in this long is given up */
#define START_TIMEOUT_S 10
#define DEATHS_MAX 8               /* signer deaths within DEATH_WINDOW_S before the monitor gives up */
#define DEATH_WINDOW_S 60
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

struct signer_client {
	int ctl;                   /* control socket to the monitor */
	pid_t monitor;
	pthread_t watcher;
	int watcher_started;
	pthread_mutex_t lock;      /* guards fd, pid, failed, next_id; one request at a time */
	pthread_cond_t changed;
	int fd;                    /* the current signer's socket, -1 while none */
	pid_t pid;
	int failed;
	int stopping;              /* signer_client_free has begun: EOF is expected */
	int generation;            /* signers received so far */
	uint32_t next_id;
	struct signer_rbuf rb;     /* what was read from fd past the last reply */
#ifdef FG_INPROCESS_SIGNER
	struct signer *local;      /* the comparison build: no process */
#endif
};

/* ---- the monitor process ---- */

/* Hand the daemon a signer's socket and pid. 0, or -1 (the daemon is gone). */
static int send_fd(int ctl, int fd, pid_t pid)
{
	int32_t p = (int32_t)pid;
	struct iovec iov = { .iov_base = &p, .iov_len = sizeof p };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	memset(u.buf, 0, sizeof u.buf);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	for (;;) {
		ssize_t w = sendmsg(ctl, &m, MSG_NOSIGNAL);
		if (w == (ssize_t)sizeof p)
			return 0;
		if (w < 0 && errno == EINTR)
			continue;
		return -1;
	}
}

/* Why a signer ended, for the log. */
static void describe_exit(int status, char *out, size_t outlen)
{
	if (WIFSIGNALED(status))
		snprintf(out, outlen, "was killed by signal %d (%s)%s", WTERMSIG(status), strsignal(WTERMSIG(status)),
			 WTERMSIG(status) == SIGSYS ? ": it made a system call its seccomp filter forbids" : "");
	else if (WIFEXITED(status))
		snprintf(out, outlen, "exited with status %d%s", WEXITSTATUS(status),
			 WEXITSTATUS(status) == 4   ? " (it cannot load a CA key)"
			 : WEXITSTATUS(status) == 5 ? " (it cannot drop its privileges)"
			 : WEXITSTATUS(status) == 6 ? " (the kernel cannot apply its seccomp filter)"
						    : "");
	else
		snprintf(out, outlen, "ended (status 0x%x)", status);
}

/* Wait for signer pid to end (0, *status) or for the daemon to shut the
 * control socket (1). The daemon may run as another user than the
 * monitor (user = ...) and so cannot signal it: the socket is how it says
 * "stop". */
static int wait_signer(pid_t pid, int *status)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	for (;;) {
		struct pollfd p[2] = { { .fd = CTL_FD, .events = POLLIN }, { .fd = pfd, .events = POLLIN } };
		int r = poll(p, pfd >= 0 ? 2 : 1, pfd >= 0 ? -1 : 200);
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
			if (pfd >= 0)
				close(pfd);
			return 1;
		}
		pid_t w = waitpid(pid, status, pfd >= 0 ? 0 : WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			break;
	}
	if (pfd >= 0)
		close(pfd);
	return 0;
}

/* The monitor's loop; never returns. */
static void monitor_main(const struct gw_config *cfg, unsigned flags, int ctl, pid_t daemon)
{
	time_t deaths[DEATHS_MAX];
	size_t ndeaths = 0;
	unsigned backoff = BACKOFF_MIN_MS;
	char err[1024];

	if ((ctl != CTL_FD && dup2(ctl, CTL_FD) != CTL_FD) || syscall(SYS_close_range, CTL_FD + 1, ~0u, 0) != 0 ||
	    fcntl(CTL_FD, F_SETFD, FD_CLOEXEC) != 0) {
		fg_err("monitor", NULL, "cannot set up the control socket: %s", strerror(errno));
		_exit(1);
	}
	prctl(PR_SET_NAME, "fg-monitor", 0, 0, 0);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);  /* the daemon's mask is not ours */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != daemon)
		_exit(1);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	for (;;) {
		int fd = -1, status = 0;
		pid_t pid = signer_spawn(cfg, flags, &fd, err, sizeof err);
		if (pid < 0) {
			fg_err("monitor", NULL, "%s", err);
			_exit(1);
		}
		if (send_fd(CTL_FD, fd, pid) != 0) {
			kill(pid, SIGKILL);
			_exit(0);       /* the daemon is gone */
		}
		close(fd);
		if (wait_signer(pid, &status) != 0) {
			/* The daemon shut the control socket: it is stopping
			 * (or gone). The signer goes with it. */
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		char how[160];
		describe_exit(status, how, sizeof how);
		if (WIFEXITED(status) && WEXITSTATUS(status) >= 4 && WEXITSTATUS(status) <= 6) {
			fg_err("monitor", NULL, "signer process %d %s; not restarting it: fix that and start fleetgated again",
			       (int)pid, how);
			_exit(1);
		}
		time_t now = time(NULL);
		size_t keep = 0;
		for (size_t i = 0; i < ndeaths; i++)
			if (now - deaths[i] < DEATH_WINDOW_S)
				deaths[keep++] = deaths[i];
		ndeaths = keep;
		deaths[ndeaths++] = now;
		if (ndeaths >= DEATHS_MAX) {
			fg_err("monitor", NULL, "signer process %d %s; that is %d deaths within %d s: giving up",
			       (int)pid, how, DEATHS_MAX, DEATH_WINDOW_S);
			_exit(1);
		}
		fg_err("monitor", NULL, "signer process %d %s; starting another in %u ms", (int)pid, how, backoff);
		struct timespec ts = { backoff / 1000, (long)(backoff % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		backoff = ndeaths > 1 ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2) : BACKOFF_MIN_MS;
	}
}

/* ---- the daemon side ---- */

/* Receive one signer socket from the monitor: 0 with *fd and *pid, 1 when
 * the monitor closed the control socket, -1 on an error. */
static int recv_fd(int ctl, int *fd, pid_t *pid)
{
	int32_t p = 0;
	struct iovec iov = { .iov_base = &p, .iov_len = sizeof p };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	ssize_t r;

	do
		r = recvmsg(ctl, &m, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return 1;
	if (r != (ssize_t)sizeof p)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	memcpy(fd, CMSG_DATA(c), sizeof *fd);
	*pid = (pid_t)p;
	return 0;
}

/* Make fd (the socket of signer pid) the one requests go to. */
static void take_signer(struct signer_client *sc, int fd, pid_t pid)
{
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	pthread_mutex_lock(&sc->lock);
	if (sc->fd >= 0)
		close(sc->fd);
	sc->fd = fd;
	sc->pid = pid;
	sc->rb.off = sc->rb.len = 0;
	if (sc->generation++ > 0) {
		stats_signer(STATS_SIGNER_RESTART);
		fg_warn("gateway", NULL, "signer process %d took over", (int)pid);
	}
	pthread_cond_broadcast(&sc->changed);
	pthread_mutex_unlock(&sc->lock);
}

/* The watcher thread: takes over each new signer; stops the daemon when
 * the monitor gives up. */
static void *watch(void *arg)
{
	struct signer_client *sc = arg;
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		int fd = -1;
		pid_t pid = 0;
		int r = recv_fd(sc->ctl, &fd, &pid);
		if (r != 0) {
			pthread_mutex_lock(&sc->lock);
			int stopping = sc->stopping;
			sc->failed = 1;
			if (sc->fd >= 0)
				close(sc->fd);
			sc->fd = -1;
			sc->pid = 0;
			pthread_cond_broadcast(&sc->changed);
			pthread_mutex_unlock(&sc->lock);
			if (!stopping) {
				fg_err("gateway", NULL, "the signer's monitor has stopped (see its lines above); fleetgated cannot sign and stops");
				kill(getpid(), SIGTERM);
			}
			return NULL;
		}
		take_signer(sc, fd, pid);
	}
}

int signer_client_watch(struct signer_client *sc, char *err, size_t errlen)
{
#ifdef FG_INPROCESS_SIGNER
	(void)sc;
	(void)err;
	(void)errlen;
	return 0;
#endif
	if (pthread_create(&sc->watcher, NULL, watch, sc) != 0) {
		fg_seterr(err, errlen, "cannot start the signer watcher thread");
		return -1;
	}
	sc->watcher_started = 1;
	return 0;
}

struct signer_client *signer_client_start(const struct gw_config *cfg, unsigned flags, char *err,
					  size_t errlen)
{
	struct signer_client *sc = calloc(1, sizeof *sc);
	int sv[2] = { -1, -1 };
	pid_t self = getpid();

	if (sc == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	sc->fd = -1;
	sc->ctl = -1;
	pthread_mutex_init(&sc->lock, NULL);
	pthread_cond_init(&sc->changed, NULL);
#ifdef FG_INPROCESS_SIGNER
	(void)flags;
	(void)self;
	(void)sv;
	fg_warn("gateway", NULL, "this fleetgated is the benchmark comparison build (-Dinprocess_signer=true): "
				 "the CA key is in the network-facing process; never deploy it");
	if ((sc->local = signer_inprocess_new(cfg, err, errlen)) == NULL) {
		free(sc);
		return NULL;
	}
	return sc;
#endif
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		fg_seterr(err, errlen, "cannot make the monitor's control socket: %s", strerror(errno));
		goto fail;
	}
	fflush(NULL);
	sc->monitor = fork();
	if (sc->monitor < 0) {
		fg_seterr(err, errlen, "cannot fork the signer's monitor: %s", strerror(errno));
		goto fail;
	}
	if (sc->monitor == 0) {
		close(sv[0]);
		monitor_main(cfg, flags, sv[1], self);
		_exit(1);
	}
	close(sv[1]);
	sv[1] = -1;
	sc->ctl = sv[0];
	/* The first signer is taken here, without a thread: the daemon
	 * confines itself (Landlock) before it starts any, and the watcher
	 * thread (signer_client_watch) takes over the signers that follow. */
	struct pollfd pfd = { .fd = sc->ctl, .events = POLLIN };
	int pr;
	do
		pr = poll(&pfd, 1, START_TIMEOUT_S * 1000);
	while (pr < 0 && errno == EINTR);
	int fd = -1;
	pid_t pid = 0;
	if (pr <= 0 || recv_fd(sc->ctl, &fd, &pid) != 0) {
		fg_seterr(err, errlen, "the signer process did not start (see its log lines above)");
		goto fail;
	}
	take_signer(sc, fd, pid);
	return sc;
fail:
	if (sv[1] >= 0)
		close(sv[1]);
	signer_client_free(sc);
	return NULL;
}

void signer_client_free(struct signer_client *sc)
{
	if (sc == NULL)
		return;
	pthread_mutex_lock(&sc->lock);
	sc->stopping = 1;
	pthread_mutex_unlock(&sc->lock);
	/* The monitor goes first (the signer follows it, PR_SET_PDEATHSIG):
	 * closing the signer's socket before would have the monitor see it
	 * exit and start another. */
	if (sc->ctl >= 0)
		shutdown(sc->ctl, SHUT_RDWR);
	if (sc->monitor > 0) {
		/* The monitor ends on the shut control socket; a daemon
		 * still root kills it outright as well. After the switch to
		 * user = ... the kill fails (EPERM) and the socket does it. */
		kill(sc->monitor, SIGKILL);
		while (waitpid(sc->monitor, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (sc->watcher_started)
		pthread_join(sc->watcher, NULL);
	if (sc->ctl >= 0)
		close(sc->ctl);
	if (sc->fd >= 0)
		close(sc->fd);
	pthread_mutex_destroy(&sc->lock);
	pthread_cond_destroy(&sc->changed);
	free(sc);
}

/* One exchange on the current signer socket, under sc->lock. 0 with the
 * reply body, -1 (the socket is dropped: the signer is dead or wedged). */
static int exchange(struct signer_client *sc, unsigned type, const void *body, size_t len, int want_reply,
		    unsigned char **reply, size_t *replylen, char *err, size_t errlen)
{
	uint32_t id = ++sc->next_id;
	struct signer_hdr h;
	char e2[512];

	*reply = NULL;
	*replylen = 0;
#ifdef FG_INPROCESS_SIGNER
	(void)id;
	(void)h;
	(void)e2;
	(void)want_reply;
	if (signer_inprocess_call(sc->local, body, len, reply, replylen) != 0) {
		fg_seterr(err, errlen, "out of memory signing");
		return -1;
	}
	return 0;
#endif
	if (sc->fd < 0) {
		fg_seterr(err, errlen, sc->failed ? "the signer process has stopped for good"
						   : "the signer process is restarting; retry in a moment");
		return -1;
	}
	if (signer_ipc_send(sc->fd, (uint16_t)type, id, body, len) != 0) {
		fg_seterr(err, errlen, "cannot send to signer process %d: %s; retry in a moment", (int)sc->pid,
			  strerror(errno));
		goto drop;
	}
	if (!want_reply)
		return 0;
	int r = signer_ipc_recv_buf(sc->fd, &sc->rb, SIGNER_MSG_MAX, &h, reply, e2, sizeof e2);
	if (r != 0 || h.type != SIGNER_MSG_REPLY || h.id != id) {
		fg_seterr(err, errlen, "signer process %d gave no answer (%s); retry in a moment", (int)sc->pid,
			  r == 1 ? "it closed its socket" : r < 0 ? e2 : "a reply out of turn");
		free(*reply);
		*reply = NULL;
		goto drop;
	}
	*replylen = h.len;
	return 0;
drop:
	close(sc->fd);
	sc->fd = -1;
	sc->rb.off = sc->rb.len = 0;
	return -1;
}

int signer_client_raw(struct signer_client *sc, unsigned type, const void *body, size_t len, int want_reply,
		      unsigned char **reply, size_t *replylen, char *err, size_t errlen)
{
	pthread_mutex_lock(&sc->lock);
	int r = exchange(sc, type, body, len, want_reply, reply, replylen, err, errlen);
	pthread_mutex_unlock(&sc->lock);
	return r;
}

int signer_client_sign(struct signer_client *sc, const char *backend, int kind, const char *profile,
		       const char *reserve_serial, const unsigned char *in, size_t len, unsigned char **out,
		       size_t *outlen, char *err, size_t errlen)
{
	Fgsigner__Item items[2], *ip[2];
	Fgsigner__Request req = FGSIGNER__REQUEST__INIT;
	Fgsigner__Reply *rep = NULL;
	unsigned char *body = NULL, *rbody = NULL;
	size_t n = 0, rlen = 0;
	int rc = -1;

	*out = NULL;
	*outlen = 0;
	if (reserve_serial != NULL) {
		fgsigner__item__init(&items[n]);
		items[n].id = (uint32_t)n + 1;
		items[n].kind = FGSIGNER__KIND__KIND_RESERVE;
		items[n].backend = (char *)backend;
		items[n].serial = (char *)reserve_serial;
		ip[n] = &items[n];
		n++;
	}
	fgsigner__item__init(&items[n]);
	items[n].id = (uint32_t)n + 1;
	items[n].kind = (Fgsigner__Kind)kind;
	items[n].backend = (char *)backend;
	items[n].profile = (char *)(profile ? profile : "");
	items[n].der.data = (uint8_t *)in;
	items[n].der.len = in ? len : 0;
	ip[n] = &items[n];
	n++;
	req.n_items = n;
	req.items = ip;
	size_t blen = fgsigner__request__get_packed_size(&req);
	if (blen > SIGNER_MSG_MAX || (body = malloc(blen ? blen : 1)) == NULL) {
		fg_seterr(err, errlen, blen > SIGNER_MSG_MAX ? "the object to sign is larger than the signer protocol's cap"
							    : "out of memory");
		return -1;
	}
	fgsigner__request__pack(&req, body);
	pthread_mutex_lock(&sc->lock);
	int r = exchange(sc, SIGNER_MSG_REQUEST, body, blen, 1, &rbody, &rlen, err, errlen);
	pthread_mutex_unlock(&sc->lock);
	free(body);
	if (r != 0) {
		stats_signer(STATS_SIGNER_UNAVAILABLE);
		return -1;
	}
	rep = fgsigner__reply__unpack(NULL, rlen, rbody);
	free(rbody);
	if (rep == NULL || (rep->error && rep->error[0]) || rep->n_results != n) {
		fg_seterr(err, errlen, "the signer process dropped the request: %s",
			  rep && rep->error && rep->error[0] ? rep->error : "its reply does not decode");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const Fgsigner__Result *res = rep->results[i];
		if (res->id != items[i].id) {
			fg_seterr(err, errlen, "the signer process answered items out of order");
			goto out;
		}
		if (res->status == FGSIGNER__STATUS__STATUS_OK)
			continue;
		fg_seterr(err, errlen, "signer: %s", res->reason && res->reason[0] ? res->reason : "no reason given");
		if (res->status == FGSIGNER__STATUS__STATUS_REFUSED) {
			stats_signer(STATS_SIGNER_REFUSED);
			rc = 1;
		}
		goto out;
	}
	const Fgsigner__Result *last = rep->results[n - 1];
	if ((*out = malloc(last->der.len ? last->der.len : 1)) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	if (last->der.len > 0)
		memcpy(*out, last->der.data, last->der.len);
	*outlen = last->der.len;
	rc = 0;
out:
	fgsigner__reply__free_unpacked(rep, NULL);
	return rc;
}

int signer_client_sign_cb(void *sc, const char *backend, int kind, const char *profile, const char *reserve_serial,
			  const unsigned char *in, size_t len, unsigned char **out, size_t *outlen, char *err,
			  size_t errlen)
{
	return signer_client_sign(sc, backend, kind, profile, reserve_serial, in, len, out, outlen, err, errlen);
}

pid_t signer_client_pid(struct signer_client *sc)
{
	pthread_mutex_lock(&sc->lock);
	pid_t p = sc->fd >= 0 ? sc->pid : 0;
	pthread_mutex_unlock(&sc->lock);
	return p;
}

pid_t signer_client_monitor_pid(const struct signer_client *sc)
{
	return sc->monitor;
}

int signer_client_failed(struct signer_client *sc)
{
	pthread_mutex_lock(&sc->lock);
	int f = sc->failed;
	pthread_mutex_unlock(&sc->lock);
	return f;
}
