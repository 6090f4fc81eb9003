/*
 * server.c: ROUTER front, worker pool and the main loop of fleetgated.
 * The picture is in server.h.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>
#include <openssl/crypto.h>

#include "confine.h"
#include "enroll.h"
#include "est.h"
#include "fg_curve.h"
#include "fg_log.h"
#include "fg_util.h"
#include "policy_reload.h"
#include "server.h"
#include "zap.h"

#define WORK_ENDPOINT "inproc://fg-work"
#define DONE_ENDPOINT "inproc://fg-done"

struct worker_thread {
	pthread_t thread;
	int started;
	void *ctx;
	struct worker *w;
	int index;
	struct policy_reload *pr;    /* shared; the policy generation source */
	uint64_t policy_gen;         /* generation this worker's policy was compiled from */
};

static int set_int(void *sock, int opt, int val)
{
	return zmq_setsockopt(sock, opt, &val, sizeof val);
}

/* Drain the rest of a multipart message that is being dropped. */
/* A blocking receive that a signal does not end (glibc interrupts every
 * thread when the daemon switches user; see confine_drop_user). */
static int recv_frame(zmq_msg_t *m, void *sock)
{
	int r;
	while ((r = zmq_msg_recv(m, sock, 0)) < 0 && zmq_errno() == EINTR)
		;
	return r;
}

static void drain(void *sock)
{
	int more = 1;
	size_t sz = sizeof more;

	while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		int rc = recv_frame(&m, sock);
		zmq_msg_close(&m);
		if (rc < 0)
			break;
	}
}

/* Between requests: when the policy generation moved, compile this
 * worker's own state from the validated source and swap it in. A failure
 * here (out of memory) keeps the previous policy and is logged once per
 * generation. */
static void worker_refresh_policy(struct worker_thread *t)
{
	char err[1024] = "";
	struct policy *p;
	uint64_t gen;

	if (t->pr == NULL || policy_reload_generation(t->pr) == t->policy_gen)
		return;
	p = policy_reload_compile(t->pr, &gen, err, sizeof err);
	t->policy_gen = gen;
	if (p == NULL) {
		fg_err("worker", NULL, "worker %d keeps its previous policy: cannot compile generation %llu: %s",
		       t->index, (unsigned long long)gen, err);
		return;
	}
	worker_set_policy(t->w, p);
	fg_debug("worker", NULL, "worker %d now runs policy generation %llu", t->index,
		 (unsigned long long)gen);
}

/* The poller: a worker of its own that asks the backends about pending
 * jobs when their time comes (the schedule is next_attempt in the store, so
 * it survives restarts), whether or not the device asks meanwhile. */
#define POLL_PERIOD_S 5

struct poller {
	pthread_t thread;
	int started;
	struct worker *w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
};

static void *poller_main(void *arg)
{
	struct poller *p = arg;
	prctl(PR_SET_NAME, "fg-poller", 0, 0, 0);
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += POLL_PERIOD_S;
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
		if (p->stop)
			break;
		pthread_mutex_unlock(&p->mu);
		worker_poll_due(p->w);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Worker thread: [routing id][client key][payload] in, [routing id][reply]
 * out. Leaves when the context shuts down (ETERM). */
static void *worker_main(void *arg)
{
	struct worker_thread *t = arg;
	void *in = zmq_socket(t->ctx, ZMQ_PULL);
	void *out = zmq_socket(t->ctx, ZMQ_PUSH);
	char name[16];

	snprintf(name, sizeof name, "fg-worker%d", t->index);
	prctl(PR_SET_NAME, name, 0, 0, 0);

	if (in == NULL || out == NULL || set_int(in, ZMQ_LINGER, 0) || set_int(out, ZMQ_LINGER, 0) ||
	    zmq_connect(in, WORK_ENDPOINT) != 0 || zmq_connect(out, DONE_ENDPOINT) != 0) {
		fg_err("worker", NULL, "worker %d cannot connect its inproc sockets: %s", t->index,
		       zmq_strerror(zmq_errno()));
		goto out;
	}
	for (;;) {
		zmq_msg_t rid, key, payload;
		zmq_msg_init(&rid);
		zmq_msg_init(&key);
		zmq_msg_init(&payload);
		if (recv_frame(&rid, in) < 0 || recv_frame(&key, in) < 0 || recv_frame(&payload, in) < 0) {
			int e = zmq_errno();
			zmq_msg_close(&rid);
			zmq_msg_close(&key);
			zmq_msg_close(&payload);
			if (e == ETERM)
				break;
			continue;
		}
		char ckey[41] = "";
		if (zmq_msg_size(&key) == 40) {
			memcpy(ckey, zmq_msg_data(&key), 40);
			ckey[40] = '\0';
		}
		uint8_t *reply = NULL;
		size_t reply_len = 0;
		worker_refresh_policy(t);
		worker_handle(t->w, ckey, zmq_msg_data(&payload), zmq_msg_size(&payload), &reply,
			      &reply_len);
		if (reply != NULL) {
			if (zmq_msg_send(&rid, out, ZMQ_SNDMORE) < 0 ||
			    zmq_send(out, reply, reply_len, 0) < 0) {
				if (zmq_errno() == ETERM) {
					free(reply);
					zmq_msg_close(&rid);
					zmq_msg_close(&key);
					zmq_msg_close(&payload);
					break;
				}
			}
			free(reply);
		}
		zmq_msg_close(&rid);
		zmq_msg_close(&key);
		zmq_msg_close(&payload);
	}
out:
	if (in)
		zmq_close(in);
	if (out)
		zmq_close(out);
	return NULL;
}

/* Move one request from the ROUTER to the workers, tagged with the client's
 * authenticated key. Frames that are not [routing id][payload], or that
 * carry no ZAP identity, are dropped. */
static void forward_request(void *router, void *work)
{
	zmq_msg_t rid, payload;
	zmq_msg_init(&rid);
	zmq_msg_init(&payload);

	if (zmq_msg_recv(&rid, router, ZMQ_DONTWAIT) < 0)
		goto out;
	if (!zmq_msg_more(&rid))
		goto out;
	if (recv_frame(&payload, router) < 0)
		goto out;
	if (zmq_msg_more(&payload)) {
		fg_warn("server", NULL, "dropped a request of more than one frame");
		drain(router);
		goto out;
	}
	const char *key = zmq_msg_gets(&payload, "User-Id");
	if (key == NULL || strlen(key) != 40) {
		fg_warn("server", NULL, "dropped a request without CURVE identity");
		goto out;
	}
	if (zmq_msg_send(&rid, work, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		fg_warn("server", NULL, "worker queue full; dropped a request (the agent retries)");
		goto out;
	}
	zmq_send(work, key, 40, ZMQ_SNDMORE);
	zmq_msg_send(&payload, work, 0);
out:
	zmq_msg_close(&rid);
	zmq_msg_close(&payload);
}

/* Move one reply from a worker back to the ROUTER. */
static void forward_reply(void *done, void *router)
{
	zmq_msg_t rid, payload;
	zmq_msg_init(&rid);
	zmq_msg_init(&payload);
	if (zmq_msg_recv(&rid, done, ZMQ_DONTWAIT) >= 0 && recv_frame(&payload, done) >= 0) {
		/* A peer that went away meanwhile makes ROUTER drop the reply;
		 * the agent retries with the same request id and the stored
		 * result comes back. */
		if (zmq_msg_send(&rid, router, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
			zmq_msg_send(&payload, router, ZMQ_DONTWAIT);
	}
	zmq_msg_close(&rid);
	zmq_msg_close(&payload);
}

/* Block the signals we handle in every thread (threads inherit the mask)
 * and return a signalfd for them. */
static int signals_setup(char *err, size_t errlen)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
		fg_seterr(err, errlen, "cannot block signals");
		return -1;
	}
	signal(SIGPIPE, SIG_IGN);
	int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		fg_seterr(err, errlen, "signalfd: %s", strerror(errno));
	return fd;
}

int server_run(const struct gw_config *cfg, struct backends *bs, char *err, size_t errlen)
{
	int rc = -1, sfd = -1;
	void *ctx = NULL, *router = NULL, *work = NULL, *done = NULL;
	struct zap *zap = NULL;
	struct worker_thread *threads = NULL;
	struct policy_reload *pr = NULL;
	struct est *est = NULL;
	struct policy_limits lim = { cfg->policy_memory, cfg->policy_instructions };
	struct poller poller = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	char pub[41], sec[41];

	if (fg_curve_load(cfg->curve_key_path, 0, pub, sec, err, errlen) != 0)
		return -1;
	sfd = signals_setup(err, errlen);
	if (sfd < 0)
		goto out;
	ctx = zmq_ctx_new();
	if (ctx == NULL) {
		fg_seterr(err, errlen, "cannot create a ZeroMQ context: %s", zmq_strerror(zmq_errno()));
		goto out;
	}
	zap = zap_start(ctx, err, errlen);
	if (zap == NULL)
		goto out;

	work = zmq_socket(ctx, ZMQ_PUSH);
	done = zmq_socket(ctx, ZMQ_PULL);
	if (work == NULL || done == NULL || set_int(work, ZMQ_LINGER, 0) ||
	    set_int(done, ZMQ_LINGER, 0) || set_int(work, ZMQ_SNDHWM, 100000) ||
	    set_int(done, ZMQ_RCVHWM, 100000) || zmq_bind(work, WORK_ENDPOINT) != 0 ||
	    zmq_bind(done, DONE_ENDPOINT) != 0) {
		fg_seterr(err, errlen, "cannot bind the worker queues: %s", zmq_strerror(zmq_errno()));
		goto out;
	}

	pr = policy_reload_new(cfg->policy_path, &lim, err, errlen);
	if (pr == NULL || policy_reload_audit_to(pr, cfg->store_path, err, errlen) != 0)
		goto out;
	threads = calloc((size_t)cfg->workers, sizeof *threads);
	if (threads == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0; i < cfg->workers; i++) {
		threads[i].ctx = ctx;
		threads[i].index = i;
		threads[i].pr = pr;
		threads[i].w = worker_new(cfg, bs, i, err, errlen);
		if (threads[i].w == NULL)
			goto out;
		if (pthread_create(&threads[i].thread, NULL, worker_main, &threads[i]) != 0) {
			fg_seterr(err, errlen, "cannot start worker thread %d", i);
			goto out;
		}
		threads[i].started = 1;
	}

	poller.w = worker_new(cfg, bs, cfg->workers, err, errlen);
	if (poller.w == NULL)
		goto out;
	if (pthread_create(&poller.thread, NULL, poller_main, &poller) != 0) {
		fg_seterr(err, errlen, "cannot start the poller thread");
		goto out;
	}
	poller.started = 1;

	/* The EST front-end: HTTPS into the same enrollment core (est.h). */
	if (cfg->est_listen[0] != '\0' && (est = est_start(cfg, bs, pr, err, errlen)) == NULL)
		goto out;

	router = zmq_socket(ctx, ZMQ_ROUTER);
	int64_t maxmsg = (int64_t)cfg->max_message;
	if (router == NULL || set_int(router, ZMQ_LINGER, 0) || set_int(router, ZMQ_CURVE_SERVER, 1) ||
	    zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, sec, 40) != 0 ||
	    zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "fleetgate", 9) != 0 ||
	    zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
	    set_int(router, ZMQ_SNDHWM, 100000) || set_int(router, ZMQ_RCVHWM, 100000)) {
		fg_seterr(err, errlen, "cannot set up the ROUTER socket: %s", zmq_strerror(zmq_errno()));
		goto out;
	}
	if (zmq_bind(router, cfg->listen) != 0) {
		fg_seterr(err, errlen, "cannot listen on %s: %s (is another fleetgated running?)",
			  cfg->listen, zmq_strerror(zmq_errno()));
		goto out;
	}
	OPENSSL_cleanse(sec, sizeof sec);
	/* Every socket is bound: the daemon gives up root (user = ...). */
	if (confine_drop_user(cfg, err, errlen) != 0)
		goto out;
	fg_info("server", NULL, "fleetgated %s listening on %s (CURVE key %s), %d workers",
		FG_VERSION, cfg->listen, pub, cfg->workers);

	for (;;) {
		zmq_pollitem_t items[4] = {
			{ router, 0, ZMQ_POLLIN, 0 },
			{ done, 0, ZMQ_POLLIN, 0 },
			{ NULL, sfd, ZMQ_POLLIN, 0 },
			{ NULL, policy_reload_fd(pr), ZMQ_POLLIN, 0 },
		};
		if (zmq_poll(items, policy_reload_fd(pr) >= 0 ? 4 : 3,
			     policy_reload_timeout_ms(pr)) < 0) {
			if (zmq_errno() == EINTR)
				continue;
			fg_seterr(err, errlen, "poll failed: %s", zmq_strerror(zmq_errno()));
			goto out;
		}
		if (items[2].revents & ZMQ_POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo == SIGHUP) {
					policy_reload_now(pr, "SIGHUP");
				} else {
					fg_info("server", NULL, "signal %u: stopping", si.ssi_signo);
					break;
				}
			}
		}
		if (items[3].revents & ZMQ_POLLIN)
			policy_reload_on_event(pr);
		policy_reload_tick(pr);
		/* Replies first, so work already done leaves before new work
		 * comes in; bounded batches keep both sides moving. */
		for (int i = 0; i < 256 && (items[1].revents & ZMQ_POLLIN); i++) {
			int ev = 0;
			size_t sz = sizeof ev;
			if (zmq_getsockopt(done, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN))
				break;
			forward_reply(done, router);
		}
		for (int i = 0; i < 256 && (items[0].revents & ZMQ_POLLIN); i++) {
			int ev = 0;
			size_t sz = sizeof ev;
			if (zmq_getsockopt(router, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN))
				break;
			forward_request(router, work);
		}
	}
	rc = 0;
out:
	OPENSSL_cleanse(sec, sizeof sec);
	est_stop(est);
	if (router)
		zmq_close(router);
	if (work)
		zmq_close(work);
	if (done)
		zmq_close(done);
	if (ctx)
		zmq_ctx_shutdown(ctx);
	if (threads) {
		for (int i = 0; i < cfg->workers; i++) {
			if (threads[i].started)
				pthread_join(threads[i].thread, NULL);
			worker_free(threads[i].w);
		}
		free(threads);
	}
	if (poller.started) {
		pthread_mutex_lock(&poller.mu);
		poller.stop = 1;
		pthread_cond_signal(&poller.cv);
		pthread_mutex_unlock(&poller.mu);
		pthread_join(poller.thread, NULL);
	}
	worker_free(poller.w);
	pthread_mutex_destroy(&poller.mu);
	pthread_cond_destroy(&poller.cv);
	zap_stop(zap);
	policy_reload_free(pr);
	if (ctx)
		zmq_ctx_term(ctx);
	if (sfd >= 0)
		close(sfd);
	if (rc == 0)
		fg_info("server", NULL, "stopped");
	return rc;
}
