/*
 * fleetgate-agent: the endpoint daemon.
 *
 *   fleetgate-agent --config FILE [--once] [--renew-now] [--foreground]
 *                   [--log-level L] [--help] [--version]
 *
 * --once enrolls each slot that has no certificate, renews each one that is
 * due (or all with --renew-now), prints what it did and exits:
 *   0 every slot is fine, 1 the gateway refused or the install failed,
 *   2 configuration or bundle error, 3 gateway unreachable (or its CURVE key
 *   does not match the bundle, or it failed and asked to retry later),
 *   4 the CA still has the request pending (run again later; the same
 *   request is resumed).
 * Without --once it runs as a daemon in the foreground (logs on stderr, for
 * systemd): one epoll loop over the ZeroMQ socket, a timerfd and a
 * signalfd; periodic check-ins; renewal when due; exponential backoff with
 * full jitter while the gateway is away; SIGHUP reloads the configuration.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "agent_config.h"
#include "challenge.h"
#include "client.h"
#include "facts.h"
#include "fg_bundle.h"
#include "fg_landlock.h"
#include "fg_curve.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"
#include "hookproc.h"
#include "sandbox.h"
#include "slot.h"

enum { EXIT_DONE = 0, EXIT_REFUSED = 1, EXIT_CONFIG = 2, EXIT_UNREACHABLE = 3, EXIT_PENDING = 4 };

#define BACKOFF_BASE 5          /* seconds */
#define BACKOFF_CAP 900         /* seconds: 15 minutes */
#define ONCE_PENDING_STEP 30    /* --once waits for PENDING answers this long at a time... */
#define ONCE_PENDING_TOTAL 120  /* ...and this long in all, then exits 4 */
#define UNSENT_POLL_MS 500      /* while waiting for a connection */

struct agent {
	struct agent_config cfg;
	struct fg_bundle bundle;
	struct agent_facts facts;
	struct client *client;
	char pub[41], sec[41];
	int once;                          /* print results on stdout */
	int force[AGENT_MAX_SLOTS];        /* renew this slot even if not due */
	struct chal_server *chal;          /* ACME http-01 answered on this host */
	/* kept across SIGHUP reloads (see reload): */
	int sandboxed;                     /* the sandbox applied at start (not "off") */
	struct sandbox_policy sb;          /* what it allows */
	struct hookproc *hooks;            /* runs reload commands; NULL: in this process */
};

/* What became of one request. */
enum outcome {
	OUT_DONE,          /* installed */
	OUT_REFUSED,       /* final refusal; the request is dropped */
	OUT_INSTALL,       /* issued but not installed (check or hook failed) */
	OUT_PENDING,       /* the CA is still working: same request later */
	OUT_RETRY,         /* gateway-side failure: same request later */
	OUT_RESUBMIT,      /* CSR rebuilt from the gateway's template: send again now */
	OUT_MAX
};

static void usage(FILE *f)
{
	fprintf(f, "usage: fleetgate-agent --config FILE [--once] [--renew-now] [--foreground]\n"
		   "                       [--log-level error|warn|info|debug] [--help] [--version]\n"
		   "\n"
		   "  --config FILE  the agent configuration (see fleetgate-agent.conf.example)\n"
		   "  --once         enroll or renew what is due, print the result, exit:\n"
		   "                 0 all fine, 1 refused or not installed, 2 config or bundle error,\n"
		   "                 3 gateway unreachable or CURVE key mismatch, 4 still pending\n"
		   "  --renew-now    renew every slot now (new key, new certificate)\n"
		   "  --foreground   run the daemon in the foreground (the default; logs on stderr)\n"
		   "  --log-level L  overrides log_level from the configuration\n"
		   "Without --once the agent runs as a daemon: it checks in, renews when due,\n"
		   "and reloads its configuration on SIGHUP.\n");
}

/* An outcome line: stdout (or stderr for problems) with --once, the log
 * in the daemon. */
static void say(const struct agent *a, enum fg_log_level lv, const char *rid, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void say(const struct agent *a, enum fg_log_level lv, const char *rid, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (a->once) {
		FILE *f = lv <= FG_LOG_WARN ? stderr : stdout;
		fprintf(f, "%s\n", buf);
		fflush(f);
		if (lv == FG_LOG_ERROR || lv == FG_LOG_WARN)
			fg_debug("agent", rid, "%s", buf);
	} else {
		fg_log(lv, "agent", rid, "%s", buf);
	}
}

static int reload_fits(const struct agent *a, const struct agent *n, char *why, size_t whylen);

/* Load config, bundle and CURVE keys and read the facts (agent_connect
 * connects). On a reload, running is the agent as it runs: the new
 * configuration must fit its sandbox (reload_fits) before anything is
 * created on disk. Returns an exit code; on failure err says why and a
 * holds whatever was loaded (agent_unload frees it). */
static int agent_load(struct agent *a, const char *config, const struct agent *running, char *err,
		      size_t errlen)
{
	char path[PATH_MAX + 16];
	if (agent_config_load(config, &a->cfg, err, errlen) != 0)
		return EXIT_CONFIG;
	if (fg_bundle_read(a->cfg.bundle, &a->bundle, err, errlen) != 0) {
		char tmp[1200];
		snprintf(tmp, sizeof tmp, "bootstrap bundle: %s (the operator makes one with 'fleetgate token create --bundle')",
			 err);
		fg_strlcpy(err, tmp, errlen);
		return EXIT_CONFIG;
	}
	if (running != NULL && !reload_fits(running, a, err, errlen))
		return EXIT_CONFIG;
	if (fg_mkdirs(a->cfg.state_dir, 0700, err, errlen) != 0)
		return EXIT_CONFIG;
	snprintf(path, sizeof path, "%s/curve.key", a->cfg.state_dir);
	if (fg_curve_load(path, 1, a->pub, a->sec, err, errlen) != 0)
		return EXIT_CONFIG;
	facts_read(NULL, &a->facts);
	if (a->chal == NULL && (a->chal = chal_new()) == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return EXIT_CONFIG;
	}
	return EXIT_DONE;
}

/* Set up the ZeroMQ connection (its threads start here: after the
 * sandbox). Returns an exit code, with err. */
static int agent_connect(struct agent *a, char *err, size_t errlen)
{
	a->client = client_new(a->bundle.endpoint, a->bundle.server_key, a->pub, a->sec, err, errlen);
	if (a->client == NULL)
		return EXIT_CONFIG;
	return EXIT_DONE;
}

static void agent_unload(struct agent *a)
{
	chal_free(a->chal);
	a->chal = NULL;
	client_free(a->client);
	a->client = NULL;
	fg_bundle_clear(&a->bundle);
	agent_config_clear(&a->cfg);
	OPENSSL_cleanse(a->sec, sizeof a->sec);
}

static void save_device_id(const struct agent *a, const char *id)
{
	char path[PATH_MAX + 16], line[128];
	if (id == NULL || *id == '\0')
		return;
	snprintf(path, sizeof path, "%s/device.id", a->cfg.state_dir);
	int n = snprintf(line, sizeof line, "%s\n", id);
	if (n > 0 && (size_t)n < sizeof line)
		fg_write_file_atomic(path, line, (size_t)n, 0644, (uid_t)-1, (gid_t)-1, NULL, 0);
}

/* slot_hook_fn: the reload command, run by the hook runner. */
static int hook_via_runner(void *arg, const struct agent_slot *s, int timeout_s, char *err, size_t errlen)
{
	return hookproc_run(arg, s, timeout_s, err, errlen);
}

/* In the hook runner, before its loop: it needs the configuration only. */
static void hooks_child_init(void *arg)
{
	struct agent *a = arg;
	OPENSSL_cleanse(a->sec, sizeof a->sec);
	fg_bundle_clear(&a->bundle);
}

/*
 * Confine the agent (sandbox.h), unless sandbox = off: start the hook
 * runner if a slot has a reload command (it must exist before the sandbox,
 * outside it), then apply the policy built from the configuration. Runs
 * after agent_load and before agent_connect: no thread runs yet, and the
 * agent has not touched the network. Returns an exit code, with err.
 */
static int agent_confine(struct agent *a, char *err, size_t errlen)
{
	char desc[600], hooks[96] = "";
	int any_hook = 0;

	if (a->cfg.sandbox == FG_SANDBOX_OFF) {
		fg_warn("agent", NULL, "sandbox: off (sandbox = off in %s): the agent runs unconfined", a->cfg.path);
		return EXIT_DONE;
	}
	if (sandbox_policy_build(&a->cfg, &a->bundle, &a->sb, err, errlen) != 0)
		return EXIT_CONFIG;
	for (size_t i = 0; i < a->cfg.nslots; i++)
		any_hook |= a->cfg.slots[i].reload[0] != '\0';
	if (any_hook) {
		a->hooks = hookproc_start(&a->cfg, hooks_child_init, a, err, errlen);
		if (a->hooks == NULL)
			return EXIT_CONFIG;
		snprintf(hooks, sizeof hooks, "; reload hooks run by the hook runner, pid %ld",
			 (long)hookproc_pid(a->hooks));
	}
	if (sandbox_apply(&a->sb, a->cfg.sandbox, desc, sizeof desc, err, errlen) != 0)
		return EXIT_CONFIG;
	a->sandboxed = 1;
	fg_info("agent", NULL, "sandbox: %s%s (sandbox = %s)", desc, hooks, fg_sandbox_mode_name(a->cfg.sandbox));
	if (a->sb.config_dir_writable[0])
		fg_info("agent", NULL, "sandbox: note: %s lies in %s, which the agent may write; keep the configuration in a directory of its own to make it read-only to the agent",
			a->cfg.path, a->sb.config_dir_writable);
	return EXIT_DONE;
}

/* Can the configuration n be taken on by the agent a, as confined at
 * start? 1, or 0 with why. */
static int reload_fits(const struct agent *a, const struct agent *n, char *why, size_t whylen)
{
	struct sandbox_policy np;
	if (!a->sandboxed)
		return n->cfg.sandbox == FG_SANDBOX_OFF ? 1
			: (fg_seterr(why, whylen, "sandbox = %s takes effect at start only; restart the agent",
				     fg_sandbox_mode_name(n->cfg.sandbox)), 0);
	if (n->cfg.sandbox != a->cfg.sandbox) {
		fg_seterr(why, whylen, "the sandbox setting changed to %s; it takes effect at start only, restart the agent",
			  fg_sandbox_mode_name(n->cfg.sandbox));
		return 0;
	}
	if (sandbox_policy_build(&n->cfg, &n->bundle, &np, why, whylen) != 0)
		return 0;
	int ok = sandbox_policy_covers(&a->sb, &np, why, whylen);
	sandbox_policy_clear(&np);
	if (!ok) {
		char tmp[PATH_MAX + 200];
		snprintf(tmp, sizeof tmp, "%s; restart the agent to apply the new configuration", why);
		fg_strlcpy(why, tmp, whylen);
		return 0;
	}
	/* the hook runner knows the reload commands read at start only */
	for (size_t i = 0; i < n->cfg.nslots; i++) {
		const struct agent_slot *s = &n->cfg.slots[i];
		const struct agent_slot *o = agent_config_slot(&a->cfg, s->name);
		if (s->reload[0] == '\0')
			continue;
		if (o == NULL || strcmp(o->reload, s->reload) != 0 || strcmp(o->key, s->key) != 0 ||
		    strcmp(o->cert, s->cert) != 0 || strcmp(o->chain, s->chain) != 0) {
			fg_seterr(why, whylen, "the reload command or paths of slot %s changed, and the hook runner runs only the commands read at start; restart the agent",
				  s->name);
			return 0;
		}
	}
	return 1;
}

/* Report the certificate just installed in slot s. */
static void report_issued(const struct agent *a, const struct agent_slot *s, const char *what,
			  const char *rid)
{
	X509 *c = NULL;
	struct fg_cert_info ci;
	char na[32];
	if (!slot_installed(s, &c, NULL) || fg_cert_info(c, &ci, NULL, 0) != 0) {
		X509_free(c);
		say(a, FG_LOG_INFO, rid, "slot %s: %s", s->name, what);
		return;
	}
	fg_time_iso(ci.not_after, na, sizeof na);
	if (a->once)
		printf("slot %s: %s\n  subject:   %s\n  issuer:    %s\n  serial:    %s\n  not after: %s\n",
		       s->name, what, ci.subject, ci.issuer, ci.serial_hex, na);
	else
		fg_info("agent", rid, "slot %s: %s: subject %s, issuer %s, serial %s, not after %s", s->name,
			what, ci.subject, ci.issuer, ci.serial_hex, na);
	X509_free(c);
}

/* The policy handed the backend's CA chain along (allow{ anchors = true }):
 * the certificates not yet among the bundle's trust anchors are added, on
 * disk and in use, before the issued certificate is checked against them.
 * The count added, or -1 with err (the bundle unchanged). */
static int add_anchors(struct agent *a, const Fleetgate__CertReply *cr, char *err, size_t errlen)
{
	const char *old = a->bundle.anchors_pem ? a->bundle.anchors_pem : "";
	char *pem = NULL;
	size_t len = 0;
	int added = 0;
	FILE *f = open_memstream(&pem, &len);
	if (f == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	fputs(old, f);
	for (size_t i = 0; i < cr->n_trust_anchors_der; i++) {
		X509 *x = fg_cert_from_der(cr->trust_anchors_der[i].data, cr->trust_anchors_der[i].len, NULL, 0);
		char *one = x ? fg_cert_to_pem(x) : NULL;
		if (one != NULL && strstr(old, one) == NULL) {
			if (len > 0 && pem[len - 1] != '\n')
				fputc('\n', f);
			fputs(one, f);
			fflush(f);
			added++;
		}
		free(one);
		X509_free(x);
	}
	if (fclose(f) != 0) {
		free(pem);
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	if (added == 0) {
		free(pem);
		return 0;
	}
	struct fg_bundle nb = a->bundle;
	nb.anchors_pem = pem;
	if (fg_bundle_write(a->cfg.bundle, &nb, err, errlen) != 0) {
		free(pem);
		return -1;
	}
	free(a->bundle.anchors_pem);
	a->bundle.anchors_pem = pem;
	return added;
}

/* Act on a CertReply for the request r of slot s. */
static enum outcome on_cert_reply(struct agent *a, const struct agent_slot *s, struct slot_request *r,
				  const Fleetgate__CertReply *cr)
{
	char err[1024] = "";
	switch (cr->status) {
	case FLEETGATE__STATUS__STATUS_OK:
		if (cr->n_trust_anchors_der > 0) {
			int n = add_anchors(a, cr, err, sizeof err);
			if (n < 0) {
				say(a, FG_LOG_ERROR, r->rid, "slot %s: not installed: cannot add the CA's trust anchors to %s: %s",
				    s->name, a->cfg.bundle, err);
				return OUT_INSTALL;
			}
			if (n > 0)
				say(a, FG_LOG_INFO, r->rid, "slot %s: %d trust anchor(s) of the issuing CA added to %s",
				    s->name, n, a->cfg.bundle);
		}
		if (cr->encrypted_key.len > 0) {
			if (slot_request_take_server_key(r, cr, err, sizeof err) != 0) {
				say(a, FG_LOG_ERROR, r->rid, "slot %s: not installed: %s", s->name, err);
				return OUT_INSTALL;
			}
			say(a, FG_LOG_INFO, r->rid, "slot %s: the CA generated the key; it came encrypted to this request's key",
			    s->name);
		}
		if (slot_install_hooked(&a->cfg, s, r, cr, a->bundle.anchors_pem, a->hooks ? hook_via_runner : NULL,
					a->hooks, err, sizeof err) != 0) {
			say(a, FG_LOG_ERROR, r->rid, "slot %s: not installed: %s", s->name, err);
			return OUT_INSTALL;
		}
		save_device_id(a, cr->device_id);
		report_issued(a, s, r->renew ? "renewed" : "enrolled", r->rid);
		return OUT_DONE;
	case FLEETGATE__STATUS__STATUS_PENDING:
		return OUT_PENDING;
	case FLEETGATE__STATUS__STATUS_RESUBMIT:
		if (cr->csr_template == NULL || r->resubmits > 0) {
			slot_request_forget(&a->cfg, s);
			say(a, FG_LOG_ERROR, r->rid, "slot %s: the gateway wants a CSR this agent cannot make: %s",
			    s->name, cr->message);
			return OUT_REFUSED;
		}
		if (slot_request_resubmit(&a->cfg, s, &a->bundle, &a->facts, r, cr->csr_template, err,
					  sizeof err) != 0) {
			slot_request_forget(&a->cfg, s);
			say(a, FG_LOG_ERROR, r->rid, "slot %s: cannot rebuild the CSR as the gateway asks: %s",
			    s->name, err);
			return OUT_REFUSED;
		}
		r->resubmits++;
		if (cr->csr_template->key_type != NULL && cr->csr_template->key_type[0] != '\0')
			say(a, FG_LOG_INFO, r->rid, "slot %s: CSR rebuilt with the names the gateway decided and a new %s key (the CA takes %s keys only)",
			    s->name, cr->csr_template->key_type, cr->csr_template->key_type);
		else
			say(a, FG_LOG_INFO, r->rid, "slot %s: CSR rebuilt with the names the gateway decided", s->name);
		return OUT_RESUBMIT;
	case FLEETGATE__STATUS__STATUS_INTERNAL:
		say(a, FG_LOG_WARN, r->rid, "slot %s: the gateway failed (%s); retrying later", s->name,
		    cr->message);
		return OUT_RETRY;
	default:
		slot_request_forget(&a->cfg, s);
		say(a, FG_LOG_ERROR, r->rid, "slot %s: refused by the gateway (%s): %s", s->name,
		    fg_status_name(cr->status), cr->message);
		return OUT_REFUSED;
	}
}

/* A PENDING reply that carries ACME challenges: serve them (challenge.h)
 * and put the tokens served into r, the acknowledgement the gateway waits
 * for. 1 when something new is served (send r again now), 0 when not, -1
 * when they cannot be served (said). */
static int serve_challenges(struct agent *a, const struct agent_slot *s, struct slot_request *r,
			    const Fleetgate__CertReply *cr)
{
	char err[1024];
	size_t n = 0;
	if (cr == NULL || cr->n_challenges == 0)
		return 0;
	int added = chal_serve(a->chal, &a->cfg, r->rid, cr->challenges, cr->n_challenges, err, sizeof err);
	if (added < 0) {
		say(a, FG_LOG_ERROR, r->rid, "slot %s: cannot answer the CA's challenge: %s", s->name, err);
		return -1;
	}
	char *const *t = chal_tokens(a->chal, &n);
	if (slot_request_set_ready(r, t, n) != 0) {
		say(a, FG_LOG_ERROR, r->rid, "slot %s: cannot encode the acknowledgement of the challenges", s->name);
		return -1;
	}
	if (added > 0)
		say(a, FG_LOG_INFO, r->rid, "slot %s: serving %d ACME http-01 challenge(s) for the CA; telling the gateway",
		    s->name, added);
	return added > 0;
}

/* Act on any reply to a slot's request; *retry_after gets the gateway's hint. */
static enum outcome on_slot_reply(struct agent *a, const struct agent_slot *s, struct slot_request *r,
				  const Fleetgate__Envelope *env, uint32_t *retry_after)
{
	*retry_after = 0;
	if (env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY) {
		*retry_after = env->cert_reply->retry_after;
		return on_cert_reply(a, s, r, env->cert_reply);
	}
	if (env->body_case == FLEETGATE__ENVELOPE__BODY_ERROR) {
		/* the gateway could not tell what was asked: the same bytes
		 * would fare no better */
		slot_request_forget(&a->cfg, s);
		say(a, FG_LOG_ERROR, r->rid, "slot %s: the gateway could not read the request (%s): %s", s->name,
		    fg_status_name(env->error->status), env->error->message);
		return OUT_REFUSED;
	}
	say(a, FG_LOG_WARN, r->rid, "slot %s: unexpected reply (body %d) from the gateway; retrying later",
	    s->name, (int)env->body_case);
	return OUT_RETRY;
}

/* ---- --once ---- */

/* One slot in --once mode; returns its exit code. */
static int once_slot(struct agent *a, size_t i)
{
	const struct agent_slot *s = &a->cfg.slots[i];
	struct slot_request r;
	int64_t due, na;
	char err[1024], t1[32], t2[32];
	int code = EXIT_DONE, waited = 0;

	enum slot_action act = slot_decide(&a->cfg, s, fg_now(), a->force[i], &due, &na);
	if (act == SLOT_VALID) {
		printf("slot %s: certificate valid until %s, renewal due at %s\n", s->name,
		       fg_time_iso(na, t1, sizeof t1), fg_time_iso(due, t2, sizeof t2));
		return EXIT_DONE;
	}
	if (slot_request_build(&a->cfg, s, act == SLOT_RENEW, &a->bundle, &a->facts, &r, err, sizeof err) != 0) {
		say(a, FG_LOG_ERROR, NULL, "slot %s: %s", s->name, err);
		return EXIT_REFUSED;
	}
	for (;;) {
		Fleetgate__Envelope *env = NULL;
		uint32_t ra = 0;
		int rc = client_call(a->client, r.buf, r.len, r.rid, (int)a->cfg.request_timeout * 1000, &env,
				     err, sizeof err);
		if (rc != CLIENT_OK) {
			say(a, FG_LOG_ERROR, r.rid, "slot %s: %s", s->name, err);
			code = rc == CLIENT_TIMEOUT ? EXIT_UNREACHABLE : EXIT_REFUSED;
			break;
		}
		enum outcome o = on_slot_reply(a, s, &r, env, &ra);
		const char *msg = env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY ? env->cert_reply->message : "";
		if (o == OUT_RESUBMIT) {
			fg_wire_free(env);
			continue;
		}
		if (o == OUT_PENDING) {
			int sc = serve_challenges(a, s, &r, env->cert_reply);
			if (sc != 0) {
				fg_wire_free(env);
				if (sc > 0)
					continue;   /* acknowledge at once */
				code = EXIT_REFUSED;
				break;
			}
			if (ra == 0)
				ra = 5;
			if (ra <= ONCE_PENDING_STEP && waited + (int)ra <= ONCE_PENDING_TOTAL) {
				fprintf(stderr, "slot %s: pending at the CA (%s); asking again in %u s\n", s->name, msg, ra);
				fg_wire_free(env);
				sleep(ra);
				waited += (int)ra;
				continue;
			}
			printf("slot %s: pending at the CA (%s); run again in %u s to collect it\n", s->name, msg, ra);
			code = EXIT_PENDING;
		} else {
			code = o == OUT_DONE ? EXIT_DONE : o == OUT_RETRY ? EXIT_UNREACHABLE : EXIT_REFUSED;
		}
		fg_wire_free(env);
		break;
	}
	chal_stop(a->chal);     /* the request ended here: nothing stays served */
	slot_request_clear(&r);
	return code;
}

/* Every slot once; the worst exit code wins (3 and 4 outrank 1). */
static int run_once(struct agent *a)
{
	int worst = EXIT_DONE;
	for (size_t i = 0; i < a->cfg.nslots; i++) {
		int code = once_slot(a, i);
		if (code > worst)
			worst = code;
		if (code == EXIT_UNREACHABLE)
			break;      /* the other slots would wait just as long */
	}
	return worst;
}

/* ---- daemon ---- */

enum busy { IDLE, WAIT_SLOT, WAIT_CHECKIN };

#define MAX_RESULTS 32
#define MAX_SEEN 64

struct cmd_result {
	char id[24];
	int ok;
	char message[256];
};

struct daemon {
	struct agent *a;
	const char *config;         /* path, for SIGHUP */
	const char *cli_level;      /* --log-level, which a reload keeps */
	int efd, tfd, sfd, zfd;
	enum busy busy;
	size_t slot;                /* WAIT_SLOT: which slot */
	struct slot_request req;    /* WAIT_SLOT: its request */
	char checkin_rid[33];
	uint64_t deadline_ns;       /* monotonic: the outstanding request times out */
	int64_t next_checkin;       /* Unix seconds */
	int64_t retry_at;           /* backoff: no request before this */
	int failures;               /* consecutive unanswered requests */
	int64_t slot_wait[AGENT_MAX_SLOTS];  /* per slot: nothing before this */
	char slot_cmd[AGENT_MAX_SLOTS][24];  /* per slot: the command its request carries out */
	int rebootstrap[AGENT_MAX_SLOTS];    /* per slot: enroll afresh, not renew */
	struct cmd_result results[MAX_RESULTS]; /* answers for the next check-in */
	size_t nresults, nsent;              /* nsent: in the check-in in flight */
	char seen[MAX_SEEN][24];             /* commands already carried out */
	size_t nseen;
	size_t chal_slot;                    /* the slot whose ACME challenges a->chal serves */
};

/* Queue the answer to command id for the next check-in, which comes soon. */
static void command_done(struct daemon *d, const char *id, int ok, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void command_done(struct daemon *d, const char *id, int ok, const char *fmt, ...)
{
	va_list ap;
	if (d->nresults == MAX_RESULTS) {
		fg_warn("agent", NULL, "too many unsent command results; dropping the answer to %s", id);
		return;
	}
	struct cmd_result *r = &d->results[d->nresults++];
	fg_strlcpy(r->id, id, sizeof r->id);
	r->ok = ok;
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof r->message, fmt, ap);
	va_end(ap);
	fg_info("agent", NULL, "command %s %s: %s", id, ok ? "done" : "failed", r->message);
	int64_t soon = fg_now() + 1;
	if (d->next_checkin > soon)
		d->next_checkin = soon;
}

/* Full jitter: uniform in [1, min(cap, base * 2^failures)] seconds. */
static int64_t backoff(struct daemon *d)
{
	int64_t cap = BACKOFF_BASE;
	for (int i = 0; i < d->failures && cap < BACKOFF_CAP; i++)
		cap *= 2;
	if (cap > BACKOFF_CAP)
		cap = BACKOFF_CAP;
	uint32_t r = 0;
	fg_random(&r, sizeof r);
	if (d->failures < 64)
		d->failures++;
	return 1 + (int64_t)(r % (uint32_t)cap);
}

/* Wake up in ms milliseconds (CLOCK_BOOTTIME: time asleep counts, so a
 * laptop that resumes catches up at once). */
static void arm_ms(struct daemon *d, int64_t ms)
{
	struct itimerspec its;
	memset(&its, 0, sizeof its);
	if (ms < 1)
		ms = 1;
	its.it_value.tv_sec = ms / 1000;
	its.it_value.tv_nsec = (ms % 1000) * 1000000L;
	timerfd_settime(d->tfd, 0, &its, NULL);
}

static int64_t min64(int64_t x, int64_t y)
{
	return x < y ? x : y;
}

/* Send a check-in: facts and the installed certificates. */
static void send_checkin(struct daemon *d)
{
	struct agent *a = d->a;
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CheckIn ci = FLEETGATE__CHECK_IN__INIT;
	Fleetgate__Facts pf = FLEETGATE__FACTS__INIT;
	Fleetgate__CertInfo inv[AGENT_MAX_SLOTS], *invp[AGENT_MAX_SLOTS];
	char serials[AGENT_MAX_SLOTS][41], err[512];
	uint8_t *buf = NULL;
	size_t len = 0, n = 0;

	for (size_t i = 0; i < a->cfg.nslots; i++) {
		X509 *c = NULL;
		struct fg_cert_info info;
		if (!slot_installed(&a->cfg.slots[i], &c, NULL) || fg_cert_info(c, &info, NULL, 0) != 0) {
			X509_free(c);
			continue;
		}
		X509_free(c);
		fleetgate__cert_info__init(&inv[n]);
		fg_strlcpy(serials[n], info.serial_hex, sizeof serials[n]);
		inv[n].slot = a->cfg.slots[i].name;
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
	Fleetgate__CommandResult res[MAX_RESULTS], *resp[MAX_RESULTS];
	for (size_t i = 0; i < d->nresults; i++) {
		fleetgate__command_result__init(&res[i]);
		res[i].id = d->results[i].id;
		res[i].ok = d->results[i].ok;
		res[i].message = d->results[i].message;
		resp[i] = &res[i];
	}
	ci.n_results = d->nresults;
	ci.results = resp;
	d->nsent = d->nresults;
	if (fg_request_id_new(d->checkin_rid) != 0)
		goto fail;
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = d->checkin_rid;
	env.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN;
	env.checkin = &ci;
	if (fg_wire_pack(&env, &buf, &len) != 0 ||
	    client_send(a->client, buf, len, d->checkin_rid, err, sizeof err) != CLIENT_OK)
		goto fail;
	free(buf);
	fg_debug("agent", d->checkin_rid, "check-in sent (%zu certificate(s))", n);
	d->busy = WAIT_CHECKIN;
	d->deadline_ns = fg_mono_ns() + (uint64_t)a->cfg.request_timeout * 1000000000u;
	return;
fail:
	free(buf);
	fg_err("agent", NULL, "cannot send a check-in: %s", err);
	d->retry_at = fg_now() + backoff(d);
}

/*
 * Start the next piece of work: a slot that needs a certificate (in
 * config order), else a check-in when due. Returns 0 when a request went
 * out (or failed to), else the Unix time of the next thing to do.
 */
static int64_t schedule(struct daemon *d)
{
	struct agent *a = d->a;
	int64_t now = fg_now(), next = d->next_checkin;
	char err[1024];

	if (now < d->retry_at)
		return d->retry_at;
	for (size_t i = 0; i < a->cfg.nslots; i++) {
		const struct agent_slot *s = &a->cfg.slots[i];
		int64_t due;
		if (now < d->slot_wait[i]) {
			next = min64(next, d->slot_wait[i]);
			continue;
		}
		enum slot_action act = slot_decide(&a->cfg, s, now, a->force[i], &due, NULL);
		if (act == SLOT_VALID) {
			next = min64(next, due);
			continue;
		}
		if (slot_request_build(&a->cfg, s, act == SLOT_RENEW && !d->rebootstrap[i], &a->bundle,
				       &a->facts, &d->req, err, sizeof err) != 0) {
			fg_err("agent", NULL, "slot %s: %s", s->name, err);
			d->slot_wait[i] = now + min64(300, a->cfg.checkin_interval);
			next = min64(next, d->slot_wait[i]);
			continue;
		}
		a->force[i] = 0;   /* the request is on disk now; it is resumed until it completes */
		size_t nt = 0;
		char *const *tok = chal_tokens(a->chal, &nt);
		if (nt > 0 && d->chal_slot == i && slot_request_set_ready(&d->req, tok, nt) != 0)
			fg_warn("agent", d->req.rid, "slot %s: cannot add the challenge acknowledgement", s->name);
		if (client_send(a->client, d->req.buf, d->req.len, d->req.rid, err, sizeof err) != CLIENT_OK) {
			fg_err("agent", d->req.rid, "slot %s: %s", s->name, err);
			slot_request_clear(&d->req);
			d->retry_at = now + backoff(d);
			return d->retry_at;
		}
		fg_info("agent", d->req.rid, "slot %s: %s request sent", s->name,
			d->req.renew ? "renewal" : "enrollment");
		d->busy = WAIT_SLOT;
		d->slot = i;
		d->deadline_ns = fg_mono_ns() + (uint64_t)a->cfg.request_timeout * 1000000000u;
		return 0;
	}
	if (now >= d->next_checkin) {
		send_checkin(d);
		return d->busy ? 0 : d->retry_at;
	}
	return next;
}

/* Commands from a check-in reply: renew/rekey one slot or all. */
static int command_seen(struct daemon *d, const char *id)
{
	for (size_t i = 0; i < d->nseen; i++)
		if (strcmp(d->seen[i], id) == 0)
			return 1;
	fg_strlcpy(d->seen[d->nseen % MAX_SEEN], id, sizeof d->seen[0]);
	if (d->nseen < MAX_SEEN)
		d->nseen++;
	return 0;
}

/* update-trust: the new anchors replace the bundle's, on disk and in use. */
static void update_trust(struct daemon *d, const Fleetgate__Command *c)
{
	struct agent *a = d->a;
	char err[512] = "";
	char *pem = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&pem, &len);
	size_t n = 0;
	for (size_t i = 0; f != NULL && i < c->n_trust_anchors_der; i++) {
		X509 *x = fg_cert_from_der(c->trust_anchors_der[i].data, c->trust_anchors_der[i].len, NULL, 0);
		char *one = x ? fg_cert_to_pem(x) : NULL;
		if (one != NULL) {
			fputs(one, f);
			n++;
		}
		free(one);
		X509_free(x);
	}
	if (f == NULL || fclose(f) != 0 || n == 0) {
		free(pem);
		command_done(d, c->id, 0, "no readable trust anchors in the command; the old ones stay");
		return;
	}
	struct fg_bundle nb = a->bundle;
	nb.anchors_pem = pem;
	if (fg_bundle_write(a->cfg.bundle, &nb, err, sizeof err) != 0) {
		free(pem);
		command_done(d, c->id, 0, "cannot write the bundle %s: %s", a->cfg.bundle, err);
		return;
	}
	free(a->bundle.anchors_pem);
	a->bundle.anchors_pem = pem;
	command_done(d, c->id, 1, "%zu trust anchor(s) installed in %s", n, a->cfg.bundle);
}

/* Commands from a check-in reply. renew/rekey/rebootstrap start a slot
 * request and are answered when it ends; update-trust at once. */
static void run_commands(struct daemon *d, const Fleetgate__CheckInReply *r)
{
	struct agent *a = d->a;
	for (size_t i = 0; i < r->n_commands; i++) {
		const Fleetgate__Command *c = r->commands[i];
		if (command_seen(d, c->id))
			continue;   /* resent before our answer arrived */
		if (strcmp(c->kind, "update-trust") == 0) {
			update_trust(d, c);
			continue;
		}
		int reboot = strcmp(c->kind, "rebootstrap") == 0;
		if (strcmp(c->kind, "renew") != 0 && strcmp(c->kind, "rekey") != 0 && !reboot) {
			command_done(d, c->id, 0, "this agent does not know the command '%s'", c->kind);
			continue;
		}
		int hit = 0;
		for (size_t j = 0; j < a->cfg.nslots; j++)
			if (c->slot[0] == '\0' || strcmp(c->slot, a->cfg.slots[j].name) == 0) {
				if (d->slot_cmd[j][0] && strcmp(d->slot_cmd[j], c->id) != 0)
					command_done(d, d->slot_cmd[j], 1, "superseded by command %s", c->id);
				a->force[j] = 1;
				d->rebootstrap[j] = reboot;
				d->slot_wait[j] = 0;
				fg_strlcpy(d->slot_cmd[j], c->id, sizeof d->slot_cmd[j]);
				hit = 1;
			}
		if (hit)
			fg_info("agent", d->checkin_rid, "command %s: %s %s", c->id, c->kind,
				c->slot[0] ? c->slot : "every slot");
		else
			command_done(d, c->id, 0, "this agent has no slot '%s'", c->slot);
	}
}

static void on_checkin_reply(struct daemon *d, const Fleetgate__Envelope *env)
{
	struct agent *a = d->a;
	int64_t now = fg_now();
	d->next_checkin = now + a->cfg.checkin_interval;
	if (env->body_case == FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY &&
	    env->checkin_reply->status == FLEETGATE__STATUS__STATUS_OK) {
		const Fleetgate__CheckInReply *r = env->checkin_reply;
		if (r->next_checkin > 0)
			d->next_checkin = now + r->next_checkin;
		save_device_id(a, r->device_id);
		/* the answers sent are recorded: drop them */
		memmove(d->results, d->results + d->nsent, (d->nresults - d->nsent) * sizeof d->results[0]);
		d->nresults -= d->nsent;
		d->nsent = 0;
		fg_debug("agent", d->checkin_rid, "checked in; next in %" PRId64 " s, %zu command(s)",
			 d->next_checkin - now, r->n_commands);
		run_commands(d, r);
		/* renewal windows the gateway holds now (a pull-in moves them) */
		for (size_t i = 0; i < r->n_renewal_windows; i++) {
			const Fleetgate__RenewalWindow *w = r->renewal_windows[i];
			for (size_t j = 0; w->slot != NULL && j < a->cfg.nslots; j++)
				if (strcmp(w->slot, a->cfg.slots[j].name) == 0)
					slot_window_update(&a->cfg, &a->cfg.slots[j], w->serial_hex,
							   w->start, w->end, d->checkin_rid);
		}
	} else if (env->body_case == FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY) {
		fg_warn("agent", d->checkin_rid, "check-in refused (%s): %s",
			fg_status_name(env->checkin_reply->status), env->checkin_reply->message);
	} else if (env->body_case == FLEETGATE__ENVELOPE__BODY_ERROR) {
		fg_warn("agent", d->checkin_rid, "check-in refused (%s): %s",
			fg_status_name(env->error->status), env->error->message);
	} else {
		fg_warn("agent", d->checkin_rid, "unexpected reply (body %d) to a check-in", (int)env->body_case);
	}
}

static void on_reply(struct daemon *d, const Fleetgate__Envelope *env)
{
	struct agent *a = d->a;
	enum busy was = d->busy;
	d->busy = IDLE;
	d->failures = 0;
	d->retry_at = 0;
	if (was == WAIT_CHECKIN) {
		on_checkin_reply(d, env);
		return;
	}
	const struct agent_slot *s = &a->cfg.slots[d->slot];
	uint32_t ra = 0;
	int64_t now = fg_now();
	enum outcome o = on_slot_reply(a, s, &d->req, env, &ra);
	if (o == OUT_RESUBMIT) {
		char err[512];
		if (client_send(a->client, d->req.buf, d->req.len, d->req.rid, err, sizeof err) == CLIENT_OK) {
			d->busy = WAIT_SLOT;
			d->deadline_ns = fg_mono_ns() + (uint64_t)a->cfg.request_timeout * 1000000000u;
			return;
		}
		fg_err("agent", d->req.rid, "slot %s: %s", s->name, err);
		slot_request_clear(&d->req);
		d->retry_at = now + backoff(d);
		return;
	}
	if (o == OUT_PENDING) {
		int sc = serve_challenges(a, s, &d->req, env->cert_reply);
		if (sc > 0) {
			char err[512];
			d->chal_slot = d->slot;
			if (client_send(a->client, d->req.buf, d->req.len, d->req.rid, err, sizeof err) == CLIENT_OK) {
				d->busy = WAIT_SLOT;
				d->deadline_ns = fg_mono_ns() + (uint64_t)a->cfg.request_timeout * 1000000000u;
				return;
			}
			fg_err("agent", d->req.rid, "slot %s: %s", s->name, err);
		}
		fg_info("agent", d->req.rid, "slot %s: pending at the CA (%s); asking again in %u s", s->name,
			env->cert_reply->message, ra ? ra : 5);
	} else if (d->chal_slot == d->slot) {
		chal_stop(a->chal);   /* the request ended (or failed for now): stop serving */
	}
	slot_request_clear(&d->req);
	char *cmd = d->slot_cmd[d->slot];
	if (cmd[0] && (o == OUT_DONE || o == OUT_REFUSED || o == OUT_INSTALL)) {
		const char *why = env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY ? env->cert_reply->message
			: env->body_case == FLEETGATE__ENVELOPE__BODY_ERROR ? env->error->message : "";
		if (o == OUT_DONE)
			command_done(d, cmd, 1, "slot %s: new certificate installed (%s)", s->name, why);
		else
			command_done(d, cmd, 0, "slot %s: %s: %s", s->name,
				     o == OUT_INSTALL ? "issued but not installed" : "refused", why);
		cmd[0] = '\0';
		d->rebootstrap[d->slot] = 0;
	}
	switch (o) {
	case OUT_DONE:
		d->slot_wait[d->slot] = 0;
		break;
	case OUT_PENDING:
		d->slot_wait[d->slot] = now + (ra ? ra : 5);
		break;
	case OUT_RETRY:
		d->slot_wait[d->slot] = now + (ra ? ra : backoff(d));
		break;
	default:
		/* refused or not installable: the operator must act; a later
		 * check-in may bring a command */
		d->slot_wait[d->slot] = now + a->cfg.checkin_interval;
		break;
	}
}

/* The outstanding request got no answer (or the handshake failed). */
static void on_silence(struct daemon *d)
{
	struct agent *a = d->a;
	char err[512];
	const char *rid = d->busy == WAIT_CHECKIN ? d->checkin_rid : d->req.rid;
	client_explain_silence(a->client, (int)a->cfg.request_timeout, err, sizeof err);
	int64_t wait = backoff(d);
	fg_warn("agent", rid, "%s; next attempt in %" PRId64 " s", err, wait);
	client_cancel(a->client);
	/* a slot's request stays on disk and is resumed with the same id */
	slot_request_clear(&d->req);
	d->busy = IDLE;
	d->retry_at = fg_now() + wait;
}

/*
 * Handle every reply that is there, start new work, and leave ZMQ_FD
 * armed: it is edge-triggered, so after each wake-up (and each send) the
 * socket is drained until nothing is left and ZMQ_EVENTS says no input.
 * Then set the timer for the next thing to do.
 */
static void pump(struct daemon *d)
{
	struct agent *a = d->a;
	char err[512];
	int64_t next = 0;

	for (int round = 0; round < 1000; round++) {
		Fleetgate__Envelope *env = NULL;
		/* replies to anything but the outstanding request are dropped
		 * inside client_recv, so this also empties the queue when idle */
		while (client_recv(a->client, &env, err, sizeof err) == CLIENT_OK) {
			if (d->busy != IDLE)
				on_reply(d, env);
			fg_wire_free(env);
			env = NULL;
		}
		if (d->busy != IDLE && client_flush(a->client, err, sizeof err) < 0) {
			fg_err("agent", NULL, "%s", err);
			on_silence(d);
		}
		if (d->busy != IDLE && client_handshake_failed(a->client))
			on_silence(d);
		if (d->busy == IDLE)
			next = schedule(d);
		if (!client_pending_input(a->client))
			break;
	}
	uint64_t mono = fg_mono_ns();
	if (d->busy != IDLE) {
		int64_t ms = mono >= d->deadline_ns ? 0 : (int64_t)((d->deadline_ns - mono) / 1000000u);
		/* not on the wire yet: look again soon (the connection may come up) */
		if (client_flush(a->client, err, sizeof err) == 0)
			ms = min64(ms, UNSENT_POLL_MS);
		arm_ms(d, ms);
	} else {
		int64_t now = fg_now();
		arm_ms(d, next > now ? (next - now) * 1000 : 1);
	}
}

static int watch(struct daemon *d, int fd)
{
	struct epoll_event ev;
	memset(&ev, 0, sizeof ev);
	ev.events = EPOLLIN;
	ev.data.fd = fd;
	return epoll_ctl(d->efd, EPOLL_CTL_ADD, fd, &ev);
}

/* SIGHUP: load the configuration and bundle again. On any error the
 * running configuration stays. The request in flight is dropped from
 * memory (it stays on disk and resumes); every slot is looked at afresh and
 * the agent checks in. */
/* Text on stderr, or journal entries with fields when stderr is the
 * journal's stream (a systemd service). */
static enum fg_log_format agent_log_format(void)
{
	return fg_log_stderr_is_journal() ? FG_LOG_JOURNAL : FG_LOG_TEXT;
}

static void reload(struct daemon *d)
{
	struct agent *a = d->a, n;
	char err[1024];

	memset(&n, 0, sizeof n);
	if (agent_load(&n, d->config, a, err, sizeof err) != EXIT_DONE ||
	    agent_connect(&n, err, sizeof err) != EXIT_DONE) {
		fg_err("agent", NULL, "reload failed, keeping the running configuration: %s", err);
		agent_unload(&n);
		return;
	}
	int zfd = client_fd(n.client);
	if (zfd < 0 || watch(d, zfd) != 0) {
		fg_err("agent", NULL, "reload failed, keeping the running configuration: cannot watch the new connection");
		agent_unload(&n);
		return;
	}
	epoll_ctl(d->efd, EPOLL_CTL_DEL, d->zfd, NULL);
	slot_request_clear(&d->req);
	agent_unload(a);
	n.once = a->once;
	n.sandboxed = a->sandboxed;
	n.sb = a->sb;
	n.hooks = a->hooks;
	*a = n;
	d->zfd = zfd;
	d->busy = IDLE;
	d->failures = 0;
	d->retry_at = 0;
	d->next_checkin = 0;
	memset(d->slot_wait, 0, sizeof d->slot_wait);
	if (d->cli_level == NULL)
		fg_log_init("fleetgate-agent", (enum fg_log_level)fg_log_level_parse(a->cfg.log_level), agent_log_format());
	fg_info("agent", NULL, "configuration reloaded from %s: %zu slot(s), gateway %s", d->config,
		a->cfg.nslots, a->bundle.endpoint);
}

static int run_daemon(struct agent *a, const char *config, const char *cli_level)
{
	struct daemon d;
	sigset_t set;
	int rc = EXIT_DONE;

	memset(&d, 0, sizeof d);
	d.a = a;
	d.config = config;
	d.cli_level = cli_level;
	d.efd = d.tfd = d.sfd = -1;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	d.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	d.tfd = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
	d.efd = epoll_create1(EPOLL_CLOEXEC);
	d.zfd = client_fd(a->client);
	if (d.sfd < 0 || d.tfd < 0 || d.efd < 0 || d.zfd < 0 || watch(&d, d.sfd) || watch(&d, d.tfd) ||
	    watch(&d, d.zfd)) {
		fprintf(stderr, "fleetgate-agent: cannot set up the event loop: %s\n", strerror(errno));
		rc = EXIT_CONFIG;
		goto out;
	}
	fg_info("agent", NULL, "fleetgate-agent %s running: %zu slot(s), gateway %s, state in %s", FG_VERSION,
		a->cfg.nslots, a->bundle.endpoint, a->cfg.state_dir);
	pump(&d);
	for (;;) {
		struct epoll_event evs[4];
		int n = epoll_wait(d.efd, evs, 4, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fg_err("agent", NULL, "epoll_wait: %s", strerror(errno));
			rc = EXIT_CONFIG;
			goto out;
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == d.sfd) {
				struct signalfd_siginfo si;
				while (read(d.sfd, &si, sizeof si) == (ssize_t)sizeof si) {
					if (si.ssi_signo == SIGHUP) {
						fg_info("agent", NULL, "SIGHUP: reloading %s", config);
						reload(&d);
					} else {
						fg_info("agent", NULL, "signal %u: stopping", si.ssi_signo);
						goto out;
					}
				}
			} else if (fd == d.tfd) {
				uint64_t exp;
				if (read(d.tfd, &exp, sizeof exp) < 0)
					continue;
				if (d.busy != IDLE && fg_mono_ns() >= d.deadline_ns)
					on_silence(&d);
			}
			/* the ZeroMQ fd needs nothing here: pump drains it */
		}
		pump(&d);
	}
out:
	slot_request_clear(&d.req);
	if (d.efd >= 0)
		close(d.efd);
	if (d.tfd >= 0)
		close(d.tfd);
	if (d.sfd >= 0)
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
	int once = 0, renew_now = 0, c, rc;
	struct agent a;
	char err[1024] = "";

	memset(&a, 0, sizeof a);
	while ((c = getopt_long(argc, argv, "c:orfl:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'o': once = 1; break;
		case 'r': renew_now = 1; break;
		case 'f': break;   /* the daemon always stays in the foreground */
		case 'l': level = optarg; break;
		case 'h': usage(stdout); return EXIT_DONE;
		case 'V': printf("fleetgate-agent %s\n", FG_VERSION); return EXIT_DONE;
		default: usage(stderr); return EXIT_CONFIG;
		}
	}
	if (config == NULL || optind != argc) {
		fprintf(stderr, "fleetgate-agent: %s\n", config == NULL ? "--config FILE is required"
									: "unexpected argument");
		usage(stderr);
		return EXIT_CONFIG;
	}
	if (level && fg_log_level_parse(level) < 0) {
		fprintf(stderr, "fleetgate-agent: unknown log level '%s'; use error, warn, info or debug\n", level);
		return EXIT_CONFIG;
	}
	/* --once keeps stderr for results unless a level is asked for */
	fg_log_init("fleetgate-agent", once ? FG_LOG_WARN : FG_LOG_INFO, agent_log_format());
	a.once = once;
	rc = agent_load(&a, config, NULL, err, sizeof err);
	if (rc == EXIT_DONE && (level || !once))
		fg_log_init("fleetgate-agent", (enum fg_log_level)fg_log_level_parse(level ? level : a.cfg.log_level),
			    agent_log_format());
	if (rc == EXIT_DONE)
		rc = agent_confine(&a, err, sizeof err);
	if (rc == EXIT_DONE)
		rc = agent_connect(&a, err, sizeof err);
	if (rc != EXIT_DONE) {
		fprintf(stderr, "fleetgate-agent: %s\n", err);
		agent_unload(&a);
		hookproc_free(a.hooks);
		sandbox_policy_clear(&a.sb);
		return rc;
	}
	for (size_t i = 0; i < a.cfg.nslots; i++)
		a.force[i] = renew_now;
	rc = once ? run_once(&a) : run_daemon(&a, config, level);
	agent_unload(&a);
	hookproc_free(a.hooks);
	sandbox_policy_clear(&a.sb);
	return rc;
}
