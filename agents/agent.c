/*
 * fleetgate-agent: the endpoint daemon.
 *
 *   fleetgate-agent --config FILE [--once] [--renew-now] [--log-level L]
 *
 * --once enrolls each slot that has no certificate, renews each one that is
 * due (or all with --renew-now), prints what it did and exits:
 *   0 every slot is fine, 1 the gateway refused or the install failed,
 *   2 configuration or bundle error, 3 gateway unreachable (or its CURVE key
 *   does not match the bundle, or it failed and asked to retry),
 *   4 the CA has the request pending (run again later).
 * Without --once it runs as a daemon in the foreground: one epoll loop over
 * the ZeroMQ socket, a timerfd and a signalfd; periodic check-ins; renewal
 * when due; exponential backoff with full jitter while the gateway is away.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "agent_config.h"
#include "client.h"
#include "facts.h"
#include "fg_bundle.h"
#include "fg_curve.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"
#include "slot.h"

enum { EXIT_DONE = 0, EXIT_REFUSED = 1, EXIT_CONFIG = 2, EXIT_UNREACHABLE = 3, EXIT_PENDING = 4 };

#define BACKOFF_BASE 5
#define BACKOFF_CAP 900

struct agent {
	struct agent_config cfg;
	struct fg_bundle bundle;
	struct agent_facts facts;
	struct client *client;
	char pub[41], sec[41];
	int renew_now;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: fleetgate-agent --config FILE [--once] [--renew-now] [--log-level L]\n"
		   "\n"
		   "  --once       enroll or renew what is due, print the result, exit\n"
		   "  --renew-now  renew every slot now (new key, new certificate)\n"
		   "Without --once: run as a daemon in the foreground.\n");
}

/* Load config, bundle, CURVE keys and facts, and connect. */
static int agent_setup(struct agent *a, const char *config, char *err, size_t errlen)
{
	char path[4200];
	if (agent_config_load(config, &a->cfg, err, errlen) != 0)
		return EXIT_CONFIG;
	if (fg_bundle_read(a->cfg.bundle, &a->bundle, err, errlen) != 0)
		return EXIT_CONFIG;
	if (fg_mkdirs(a->cfg.state_dir, 0700, err, errlen) != 0)
		return EXIT_CONFIG;
	snprintf(path, sizeof path, "%s/curve.key", a->cfg.state_dir);
	if (fg_curve_load(path, 1, a->pub, a->sec, err, errlen) != 0)
		return EXIT_CONFIG;
	facts_read(NULL, &a->facts);
	a->client = client_new(a->bundle.endpoint, a->bundle.server_key, a->pub, a->sec, err, errlen);
	if (a->client == NULL)
		return EXIT_CONFIG;
	return EXIT_DONE;
}

static void agent_teardown(struct agent *a)
{
	client_free(a->client);
	fg_bundle_clear(&a->bundle);
	agent_config_clear(&a->cfg);
	OPENSSL_cleanse(a->sec, sizeof a->sec);
}

static void save_device_id(struct agent *a, const char *id)
{
	char path[4200];
	if (id == NULL || *id == '\0')
		return;
	snprintf(path, sizeof path, "%s/device.id", a->cfg.state_dir);
	char line[64];
	int n = snprintf(line, sizeof line, "%s\n", id);
	fg_write_file_atomic(path, line, (size_t)n, 0644, (uid_t)-1, (gid_t)-1, NULL, 0);
}

static void print_cert(const struct agent_slot *s, const char *what)
{
	X509 *c = NULL;
	struct fg_cert_info ci;
	char na[32];
	if (!slot_installed(s, &c, NULL) || fg_cert_info(c, &ci, NULL, 0) != 0) {
		X509_free(c);
		return;
	}
	printf("slot %s: %s\n  subject: %s\n  issuer:  %s\n  serial:  %s\n  expires: %s\n", s->name, what,
	       ci.subject, ci.issuer, ci.serial_hex, fg_time_iso(ci.not_after, na, sizeof na));
	X509_free(c);
}

/* What a slot needs now: 0 nothing, 1 enroll, 2 renew; *due gets the
 * renewal time of an installed certificate. */
static int slot_need(struct agent *a, const struct agent_slot *s, int64_t *due)
{
	X509 *c = NULL;
	*due = 0;
	if (slot_has_pending(&a->cfg, s))
		return 1;
	if (!slot_installed(s, &c, NULL))
		return 1;
	*due = slot_renew_due(s, c);
	X509_free(c);
	return a->renew_now || fg_now() >= *due ? 2 : 0;
}

/* Handle a CertReply for slot s; returns an exit code. */
static int handle_cert_reply(struct agent *a, const struct agent_slot *s, struct slot_request *r,
			     const Fleetgate__CertReply *cr, uint32_t *retry_after)
{
	char err[1024] = "";
	*retry_after = cr->retry_after;
	switch (cr->status) {
	case FLEETGATE__STATUS__STATUS_OK:
		if (slot_install(&a->cfg, s, r, cr, a->bundle.anchors_pem, err, sizeof err) != 0) {
			fprintf(stderr, "slot %s: not installed: %s\n", s->name, err);
			fg_err("agent", r->rid, "slot %s: not installed: %s", s->name, err);
			return EXIT_REFUSED;
		}
		save_device_id(a, cr->device_id);
		print_cert(s, r->renew ? "renewed" : "enrolled");
		fg_info("agent", r->rid, "slot %s: %s, %s", s->name, r->renew ? "renewed" : "enrolled", cr->message);
		return EXIT_DONE;
	case FLEETGATE__STATUS__STATUS_PENDING:
		printf("slot %s: pending at the CA (%s); run again in %u s\n", s->name, cr->message,
		       cr->retry_after);
		return EXIT_PENDING;
	case FLEETGATE__STATUS__STATUS_INTERNAL:
		fprintf(stderr, "slot %s: the gateway failed (%s); retry later\n", s->name, cr->message);
		return EXIT_UNREACHABLE;
	default:
		slot_request_forget(&a->cfg, s);
		fprintf(stderr, "slot %s: refused by the gateway (%s): %s\n", s->name,
			fg_status_name(cr->status), cr->message);
		fg_warn("agent", r->rid, "slot %s: refused (%s): %s", s->name, fg_status_name(cr->status),
			cr->message);
		return EXIT_REFUSED;
	}
}

/* Turn any reply into an exit code for slot s. */
static int handle_reply(struct agent *a, const struct agent_slot *s, struct slot_request *r,
			Fleetgate__Envelope *env, uint32_t *retry_after)
{
	*retry_after = 0;
	if (env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY)
		return handle_cert_reply(a, s, r, env->cert_reply, retry_after);
	if (env->body_case == FLEETGATE__ENVELOPE__BODY_ERROR) {
		slot_request_forget(&a->cfg, s);
		fprintf(stderr, "slot %s: the gateway could not read the request: %s\n", s->name,
			env->error->message);
		return EXIT_REFUSED;
	}
	fprintf(stderr, "slot %s: unexpected reply type %d from the gateway\n", s->name, (int)env->body_case);
	return EXIT_UNREACHABLE;
}

static int run_once(struct agent *a)
{
	int worst = EXIT_DONE;
	char err[1024];
	for (size_t i = 0; i < a->cfg.nslots; i++) {
		const struct agent_slot *s = &a->cfg.slots[i];
		int64_t due;
		int need = slot_need(a, s, &due);
		if (need == 0) {
			X509 *c = NULL;
			struct fg_cert_info ci;
			char na[32], dd[32];
			if (slot_installed(s, &c, NULL) && fg_cert_info(c, &ci, NULL, 0) == 0)
				printf("slot %s: certificate %s valid until %s, renewal due at %s\n", s->name,
				       ci.serial_hex, fg_time_iso(ci.not_after, na, sizeof na),
				       fg_time_iso(due, dd, sizeof dd));
			X509_free(c);
			continue;
		}
		struct slot_request r;
		if (slot_request_build(&a->cfg, s, need == 2, &a->bundle, &a->facts, &r, err, sizeof err) != 0) {
			fprintf(stderr, "slot %s: %s\n", s->name, err);
			worst = worst > EXIT_REFUSED ? worst : EXIT_REFUSED;
			continue;
		}
		Fleetgate__Envelope *env = NULL;
		int rc = client_call(a->client, r.buf, r.len, r.rid, (int)a->cfg.request_timeout * 1000,
				     &env, err, sizeof err);
		int code;
		if (rc != CLIENT_OK) {
			fprintf(stderr, "slot %s: %s\n", s->name, err);
			code = rc == CLIENT_TIMEOUT ? EXIT_UNREACHABLE : EXIT_REFUSED;
		} else {
			uint32_t ra;
			code = handle_reply(a, s, &r, env, &ra);
			fg_wire_free(env);
		}
		slot_request_clear(&r);
		if (code > worst)
			worst = code;
		if (code == EXIT_UNREACHABLE)
			break;      /* the other slots would wait just as long */
	}
	return worst;
}

/* ---- daemon ---- */

struct daemon {
	struct agent *a;
	int efd, tfd, sfd, zfd;
	int waiting;                /* a request is in flight */
	int checkin;                /* ...and it is a check-in */
	size_t slot;                /* ...for this slot */
	struct slot_request req;
	char checkin_rid[33];
	int64_t next_checkin;
	int64_t retry_at;           /* backoff: nothing before this */
	int failures;
	int64_t slot_wait_until[64];/* per slot: pending/refused, wait until */
};

static void arm(struct daemon *d, int64_t seconds_from_now)
{
	struct itimerspec its;
	memset(&its, 0, sizeof its);
	its.it_value.tv_sec = seconds_from_now > 0 ? seconds_from_now : 0;
	its.it_value.tv_nsec = seconds_from_now > 0 ? 0 : 1000000;   /* soon */
	timerfd_settime(d->tfd, 0, &its, NULL);
}

static int64_t backoff(struct daemon *d)
{
	int64_t cap = BACKOFF_BASE;
	for (int i = 0; i < d->failures && cap < BACKOFF_CAP; i++)
		cap *= 2;
	if (cap > BACKOFF_CAP)
		cap = BACKOFF_CAP;
	uint32_t r = 0;
	fg_random(&r, sizeof r);
	d->failures++;
	return 1 + (int64_t)(r % (uint32_t)cap);   /* full jitter */
}

/* Start the next piece of work, or arm the timer for when it is due. */
static void schedule(struct daemon *d)
{
	struct agent *a = d->a;
	int64_t now = fg_now(), next = d->next_checkin;
	char err[1024];

	if (d->waiting)
		return;
	if (now < d->retry_at) {
		arm(d, d->retry_at - now);
		return;
	}
	for (size_t i = 0; i < a->cfg.nslots && i < 64; i++) {
		const struct agent_slot *s = &a->cfg.slots[i];
		int64_t due;
		if (now < d->slot_wait_until[i]) {
			if (d->slot_wait_until[i] < next)
				next = d->slot_wait_until[i];
			continue;
		}
		int need = slot_need(a, s, &due);
		if (need == 0) {
			if (due < next)
				next = due;
			continue;
		}
		if (slot_request_build(&a->cfg, s, need == 2, &a->bundle, &a->facts, &d->req, err, sizeof err) != 0) {
			fg_err("agent", NULL, "slot %s: %s", s->name, err);
			d->slot_wait_until[i] = now + backoff(d);
			continue;
		}
		if (client_send(a->client, d->req.buf, d->req.len, d->req.rid, err, sizeof err) != 0) {
			fg_err("agent", d->req.rid, "%s", err);
			slot_request_clear(&d->req);
			d->retry_at = now + backoff(d);
			arm(d, d->retry_at - now);
			return;
		}
		fg_info("agent", d->req.rid, "slot %s: %s request sent", s->name, d->req.renew ? "renewal" : "enrollment");
		d->waiting = 1;
		d->checkin = 0;
		d->slot = i;
		arm(d, a->cfg.request_timeout);
		return;
	}
	if (now >= d->next_checkin) {
		Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
		Fleetgate__CheckIn ci = FLEETGATE__CHECK_IN__INIT;
		Fleetgate__Facts pf = FLEETGATE__FACTS__INIT;
		Fleetgate__CertInfo inv[64], *invp[64];
		char serials[64][41];
		size_t n = 0;
		for (size_t i = 0; i < a->cfg.nslots && i < 64; i++) {
			X509 *c = NULL;
			struct fg_cert_info info;
			if (!slot_installed(&a->cfg.slots[i], &c, NULL) || fg_cert_info(c, &info, NULL, 0) != 0) {
				X509_free(c);
				continue;
			}
			X509_free(c);
			fleetgate__cert_info__init(&inv[n]);
			fg_strlcpy(serials[n], info.serial_hex, sizeof serials[n]);
			inv[n].slot = (char *)a->cfg.slots[i].name;
			inv[n].serial_hex = serials[n];
			inv[n].not_after = info.not_after;
			invp[n] = &inv[n];
			n++;
		}
		facts_read(NULL, &a->facts);
		facts_to_proto(&a->facts, &pf);
		ci.facts = &pf;
		ci.n_inventory = n;
		ci.inventory = invp;
		fg_request_id_new(d->checkin_rid);
		env.version = FG_PROTOCOL_VERSION;
		env.request_id = d->checkin_rid;
		env.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN;
		env.checkin = &ci;
		uint8_t *buf;
		size_t len;
		if (fg_wire_pack(&env, &buf, &len) == 0 &&
		    client_send(a->client, buf, len, d->checkin_rid, err, sizeof err) == 0) {
			d->waiting = 1;
			d->checkin = 1;
			arm(d, a->cfg.request_timeout);
			free(buf);
			return;
		}
		free(buf);
		d->retry_at = now + backoff(d);
		arm(d, d->retry_at - now);
		return;
	}
	arm(d, next - now);
}

static void on_reply(struct daemon *d, Fleetgate__Envelope *env)
{
	struct agent *a = d->a;
	int64_t now = fg_now();
	d->waiting = 0;
	d->failures = 0;
	if (d->checkin) {
		if (env->body_case == FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY &&
		    env->checkin_reply->status == FLEETGATE__STATUS__STATUS_OK) {
			const Fleetgate__CheckInReply *r = env->checkin_reply;
			int64_t iv = r->next_checkin ? r->next_checkin : a->cfg.checkin_interval;
			d->next_checkin = now + iv;
			for (size_t i = 0; i < r->n_commands; i++) {
				const Fleetgate__Command *c = r->commands[i];
				if (strcmp(c->kind, "renew") == 0 || strcmp(c->kind, "rekey") == 0) {
					fg_info("agent", NULL, "gateway asks to %s %s", c->kind,
						c->slot[0] ? c->slot : "every slot");
					a->renew_now = 1;
				} else {
					fg_info("agent", NULL, "ignoring command '%s' this agent does not know", c->kind);
				}
			}
		} else {
			const char *msg = env->body_case == FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY
				? env->checkin_reply->message : "unexpected reply";
			fg_warn("agent", NULL, "check-in refused: %s", msg);
			d->next_checkin = now + a->cfg.checkin_interval;
		}
		return;
	}
	const struct agent_slot *s = &a->cfg.slots[d->slot];
	uint32_t ra = 0;
	int code = handle_reply(a, s, &d->req, env, &ra);
	slot_request_clear(&d->req);
	if (code == EXIT_DONE) {
		a->renew_now = 0;
	} else if (code == EXIT_PENDING || code == EXIT_UNREACHABLE) {
		d->slot_wait_until[d->slot] = now + (ra ? ra : backoff(d));
	} else {
		/* Refused: try again much later (the operator must act). */
		d->slot_wait_until[d->slot] = now + a->cfg.checkin_interval;
	}
}

/* Handle every reply that is there, start new work, and leave ZMQ_FD armed:
 * it is edge-triggered, so it must be drained after each wake-up and
 * checked after each send. */
static void pump(struct daemon *d)
{
	char err[512];
	for (int round = 0; round < 64; round++) {
		Fleetgate__Envelope *env = NULL;
		while (d->waiting && client_recv(d->a->client, &env, err, sizeof err) == CLIENT_OK) {
			on_reply(d, env);
			fg_wire_free(env);
			env = NULL;
		}
		if (!d->waiting)
			schedule(d);
		if (!d->waiting || !client_pending_input(d->a->client))
			return;
	}
}

static int run_daemon(struct agent *a)
{
	struct daemon d;
	sigset_t set;
	struct epoll_event ev;
	int rc = EXIT_DONE;

	memset(&d, 0, sizeof d);
	d.a = a;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	d.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	d.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	d.efd = epoll_create1(EPOLL_CLOEXEC);
	d.zfd = client_fd(a->client);
	if (d.sfd < 0 || d.tfd < 0 || d.efd < 0 || d.zfd < 0) {
		fprintf(stderr, "fleetgate-agent: cannot set up the event loop: %s\n", strerror(errno));
		return EXIT_CONFIG;
	}
	int fds[3] = { d.sfd, d.tfd, d.zfd };
	for (int i = 0; i < 3; i++) {
		ev.events = EPOLLIN;
		ev.data.fd = fds[i];
		epoll_ctl(d.efd, EPOLL_CTL_ADD, fds[i], &ev);
	}
	fg_info("agent", NULL, "fleetgate-agent %s running: %zu slot(s), gateway %s", FG_VERSION,
		a->cfg.nslots, a->bundle.endpoint);
	pump(&d);
	for (;;) {
		struct epoll_event evs[4];
		int n = epoll_wait(d.efd, evs, 4, -1);
		if (n < 0 && errno == EINTR)
			continue;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == d.sfd) {
				struct signalfd_siginfo si;
				while (read(d.sfd, &si, sizeof si) == sizeof si) {
					if (si.ssi_signo == SIGHUP) {
						fg_info("agent", NULL, "SIGHUP: checking every slot now");
						d.next_checkin = 0;
						memset(d.slot_wait_until, 0, sizeof d.slot_wait_until);
						d.retry_at = 0;
					} else {
						fg_info("agent", NULL, "signal %u: stopping", si.ssi_signo);
						goto out;
					}
				}
			} else if (fd == d.tfd) {
				uint64_t exp;
				if (read(d.tfd, &exp, sizeof exp) < 0 && errno == EAGAIN)
					continue;
				if (d.waiting) {
					char err[512];
					client_explain_silence(a->client, (int)a->cfg.request_timeout, err, sizeof err);
					fg_warn("agent", d.checkin ? d.checkin_rid : d.req.rid, "%s", err);
					d.waiting = 0;
					/* the slot's request stays on disk and is resumed */
					slot_request_clear(&d.req);
					d.retry_at = fg_now() + backoff(&d);
				}
			}
		}
		pump(&d);
	}
out:
	slot_request_clear(&d.req);
	close(d.efd);
	close(d.tfd);
	close(d.sfd);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "once", no_argument, NULL, 'o' },
		{ "renew-now", no_argument, NULL, 'r' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *level = NULL;
	int once = 0, c;
	struct agent a;
	char err[1024] = "";

	memset(&a, 0, sizeof a);
	while ((c = getopt_long(argc, argv, "c:orfl:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'o': once = 1; break;
		case 'r': a.renew_now = 1; break;
		case 'f': break;
		case 'l': level = optarg; break;
		case 'h': usage(stdout); return EXIT_DONE;
		case 'V': printf("fleetgate-agent %s\n", FG_VERSION); return EXIT_DONE;
		default: usage(stderr); return EXIT_CONFIG;
		}
	}
	if (config == NULL || optind != argc) {
		usage(stderr);
		return EXIT_CONFIG;
	}
	fg_log_init("fleetgate-agent", once ? FG_LOG_WARN : FG_LOG_INFO, FG_LOG_TEXT);
	int rc = agent_setup(&a, config, err, sizeof err);
	if (rc != EXIT_DONE) {
		fprintf(stderr, "fleetgate-agent: %s\n", err);
		agent_teardown(&a);
		return rc;
	}
	int lv = fg_log_level_parse(level ? level : a.cfg.log_level);
	if (lv < 0) {
		fprintf(stderr, "fleetgate-agent: unknown log level '%s'; use error, warn, info or debug\n",
			level ? level : a.cfg.log_level);
		agent_teardown(&a);
		return EXIT_CONFIG;
	}
	if (!once || level)
		fg_log_init("fleetgate-agent", (enum fg_log_level)lv, FG_LOG_TEXT);
	rc = once ? run_once(&a) : run_daemon(&a);
	agent_teardown(&a);
	return rc;
}
