/*
 * enroll.c: what a gateway worker does with one request.
 *
 * Enrollment and renewal follow the write-ahead job protocol:
 *   1. a request id already known for this client key returns its stored
 *      answer (or resumes its open job): retries are idempotent;
 *   2. the device is found by its authenticated CURVE key; an unknown key
 *      needs a valid token; a renewal needs a certificate of this device
 *      and a proof of possession of its key;
 *   3. the CSR is checked, the policy decides, and C code clamps the
 *      decision to the profile (names from the decision, never the CSR);
 *   4. store_job_admit makes the job durable (consuming the token and
 *      binding the key in the same transaction);
 *   5. the backend issues (the local CA writes its to-be-signed data ahead
 *      of the signature through the job), and store_job_finish records the
 *      certificate and the reply together.
 * Bad input is answered and writes nothing.
 *
 * Two front-ends feed it through struct enroll_req (enroll.h): the ZeroMQ
 * workers (worker_handle, identity = the ZAP-authenticated CURVE key) and
 * the EST front-end (est.c, identity = "est:" + the CSR key's hash, or the
 * device of the TLS client certificate). The reply is always an Envelope
 * frame, which is also what a finished job stores for retries.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "enroll.h"
#include "names.h"
#include "fg_log.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"
#include "policy.h"
#include "stats.h"
#include "store.h"

#define SKEW_BACKDATE 60        /* seconds notBefore is backdated for clock skew */
#define RETRY_INTERNAL 10       /* seconds an agent waits after a transient failure */
#define CN_MAX NAME_CN_MAX      /* ub-common-name, RFC 5280 appendix A.1 */

struct worker {
	const struct gw_config *cfg;
	struct backends *bs;
	struct store *st;
	struct policy *pol;
	int index;
	char stats_backend[64];   /* backend of the request in hand, "" before one is known */
};

/* Everything needed to issue (and to resume issuing after a restart):
 * the clamped decision plus the CSR. Kept in the job as JSON. */
struct params {
	char kind[16];
	char slot[64];
	char device_id[40];
	char profile[64];
	char backend[64];
	char cn[CN_MAX + 1];
	char *dns[POLICY_MAX_NAMES];
	size_t ndns;
	char *ip[POLICY_MAX_NAMES];
	size_t nip;
	char *email[POLICY_MAX_NAMES];
	size_t nemail;
	int64_t not_before;
	int64_t not_after;
	uint32_t key_usage;
	char *eku[CONFIG_MAX_EKU];
	size_t neku;
	char challenge[256];
	char acme_challenge[32];  /* "" = the backend's challenge setting */
	int server_keygen;      /* the CA makes the key (policy keygen = "server") */
	int anchors;            /* the reply carries the backend's CA chain (policy anchors = true) */
	unsigned char *csr;
	size_t csr_len;
};

static void params_clear(struct params *p)
{
	for (size_t i = 0; i < p->ndns; i++)
		free(p->dns[i]);
	for (size_t i = 0; i < p->nip; i++)
		free(p->ip[i]);
	for (size_t i = 0; i < p->nemail; i++)
		free(p->email[i]);
	for (size_t i = 0; i < p->neku; i++)
		free(p->eku[i]);
	free(p->csr);
	memset(p, 0, sizeof *p);
}

struct worker *worker_new(const struct gw_config *cfg, struct backends *bs, int index,
			  char *err, size_t errlen)
{
	struct worker *w = calloc(1, sizeof *w);
	struct policy_limits lim = { cfg->policy_memory, cfg->policy_instructions };

	if (w == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return NULL;
	}
	w->cfg = cfg;
	w->bs = bs;
	w->index = index;
	w->st = store_open(cfg->store_path, 0, err, errlen);
	if (w->st == NULL)
		goto fail;
	w->pol = policy_new(cfg->policy_path, &lim, err, errlen);
	if (w->pol == NULL)
		goto fail;
	return w;
fail:
	worker_free(w);
	return NULL;
}

void worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	policy_free(w->pol);
	store_free(w->st);
	free(w);
}

struct store *worker_store(struct worker *w)
{
	return w->st;
}

void worker_set_policy(struct worker *w, struct policy *p)
{
	policy_free(w->pol);
	w->pol = p;
}

/* ---- replies ---- */

static void pack_env(Fleetgate__Envelope *env, const char *rid, uint8_t **out, size_t *len)
{
	env->version = FG_PROTOCOL_VERSION;
	env->request_id = (char *)(rid ? rid : "");
	if (fg_wire_pack(env, out, len) != 0) {
		*out = NULL;
		*len = 0;
	}
}

static void __attribute__((format(printf, 6, 7)))
reply_status(const char *rid, Fleetgate__Status status, uint32_t retry_after,
	     uint8_t **out, size_t *len, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);

	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CertReply cr = FLEETGATE__CERT_REPLY__INIT;
	cr.status = status;
	cr.message = msg;
	cr.retry_after = retry_after;
	env.body_case = FLEETGATE__ENVELOPE__BODY_CERT_REPLY;
	env.cert_reply = &cr;
	pack_env(&env, rid, out, len);
	fg_log(status == FLEETGATE__STATUS__STATUS_INTERNAL ? FG_LOG_ERROR : FG_LOG_INFO, "enroll",
	       rid, "%s: %s", fg_status_name(status), msg);
}

static void __attribute__((format(printf, 5, 6)))
reply_error(const char *rid, Fleetgate__Status status, uint8_t **out, size_t *len,
	    const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);

	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__ErrorReply er = FLEETGATE__ERROR_REPLY__INIT;
	er.status = status;
	er.message = msg;
	env.body_case = FLEETGATE__ENVELOPE__BODY_ERROR;
	env.error = &er;
	pack_env(&env, rid, out, len);
	fg_info("gateway", rid && *rid ? rid : NULL, "%s: %s", fg_status_name(status), msg);
}

/* ---- names and params ---- */

static int slot_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
			return 0;
	return 1;
}


/* Copy a name list, checking each entry; -1 with err naming the bad one. */
static int copy_names(char **dst, size_t *ndst, char *const *src, size_t n,
		      int (*valid)(const char *), const char *what, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		if (!valid(src[i])) {
			fg_seterr(err, errlen, "policy named an invalid %s '%s'", what, src[i]);
			return -1;
		}
		dst[i] = strdup(src[i]);
		if (dst[i] == NULL) {
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
		*ndst = i + 1;
	}
	return 0;
}

/* Turn an allow decision into issuance parameters, clamped to the profile:
 * a policy may narrow (shorter validity) but never widen (names the
 * profile forbids, unknown profile or backend). 0, or -1 with err (a
 * message for the device). */
static int params_from_decision(const struct worker *w, const struct policy_decision *d,
				const char *fallback, struct params *p, int64_t now, const char *rid,
				char *err, size_t errlen)
{
	const char *pname = d->profile[0] ? d->profile : fallback && *fallback ? fallback : "default";
	const struct config_profile *prof = config_profile(w->cfg, pname);
	if (prof == NULL) {
		fg_seterr(err, errlen, "policy chose profile '%s', which the gateway config does not define",
			  pname);
		return -1;
	}
	const char *bname = d->backend[0] ? d->backend : prof->backend;
	if (config_backend(w->cfg, bname) == NULL || backends_find(w->bs, bname) == NULL) {
		fg_seterr(err, errlen, "policy chose backend '%s', which the gateway config does not define",
			  bname);
		return -1;
	}
	fg_strlcpy(p->profile, pname, sizeof p->profile);
	fg_strlcpy(p->backend, bname, sizeof p->backend);

	if (d->cn[0] && !(prof->names & NAME_CN)) {
		fg_seterr(err, errlen, "policy asked for a subject CN, which profile '%s' does not allow", pname);
		return -1;
	}
	if (d->ndns && !(prof->names & NAME_DNS)) {
		fg_seterr(err, errlen, "policy asked for DNS names, which profile '%s' does not allow", pname);
		return -1;
	}
	if (d->nip && !(prof->names & NAME_IP)) {
		fg_seterr(err, errlen, "policy asked for IP addresses, which profile '%s' does not allow", pname);
		return -1;
	}
	if (d->nemail && !(prof->names & NAME_EMAIL)) {
		fg_seterr(err, errlen, "policy asked for e-mail names, which profile '%s' does not allow", pname);
		return -1;
	}
	if (!d->cn[0] && !d->ndns && !d->nip && !d->nemail) {
		fg_seterr(err, errlen, "policy allowed the request but named no subject (cn, dns, ip or email)");
		return -1;
	}
	if (!name_cn_valid(d->cn)) {
		fg_seterr(err, errlen, "policy named an invalid subject CN (at most %d printable characters)",
			  CN_MAX);
		return -1;
	}
	fg_strlcpy(p->cn, d->cn, sizeof p->cn);
	if (copy_names(p->dns, &p->ndns, d->dns, d->ndns, name_dns_valid, "DNS name", err, errlen) ||
	    copy_names(p->ip, &p->nip, d->ip, d->nip, name_ip_valid, "IP address", err, errlen) ||
	    copy_names(p->email, &p->nemail, d->email, d->nemail, name_email_valid, "e-mail address",
		       err, errlen))
		return -1;

	int64_t validity = d->validity > 0 ? d->validity : prof->default_validity;
	if (validity > prof->max_validity) {
		fg_debug("enroll", rid, "validity %lld s clamped to profile '%s' maximum %lld s",
			 (long long)validity, pname, (long long)prof->max_validity);
		validity = prof->max_validity;
	}
	p->not_before = now - SKEW_BACKDATE;
	p->not_after = now + validity;
	p->key_usage = prof->key_usage;
	for (size_t i = 0; i < prof->neku; i++) {
		p->eku[i] = strdup(prof->eku[i]);
		if (p->eku[i] == NULL) {
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
		p->neku = i + 1;
	}
	fg_strlcpy(p->challenge, d->challenge, sizeof p->challenge);
	if (d->acme_challenge[0] && strcmp(d->acme_challenge, "http-01-gateway") != 0 &&
	    strcmp(d->acme_challenge, "http-01-agent") != 0 && strcmp(d->acme_challenge, "dns-01") != 0) {
		fg_seterr(err, errlen, "policy chose acme_challenge '%s'; use \"http-01-gateway\", \"http-01-agent\" or \"dns-01\"",
			  d->acme_challenge);
		return -1;
	}
	fg_strlcpy(p->acme_challenge, d->acme_challenge, sizeof p->acme_challenge);
	if (strcmp(d->keygen, "server") == 0) {
		const struct backend *b = backends_find(w->bs, bname);
		if (!b->ops->server_keygen) {
			fg_seterr(err, errlen, "policy asked for a server-generated key, which backend '%s' cannot make; route such slots to an est backend",
				  bname);
			return -1;
		}
		p->server_keygen = 1;
	}
	p->anchors = d->anchors;
	return 0;
}

static json_t *names_json(char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* params -> JSON text (malloc'd). The CSR travels as hex. */
static char *params_to_json(const struct params *p)
{
	char *hex = malloc(p->csr_len * 2 + 1), *out = NULL;
	if (hex == NULL)
		return NULL;
	fg_hex(p->csr, p->csr_len, hex);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}",
			      "kind", p->kind, "slot", p->slot, "device_id", p->device_id,
			      "profile", p->profile, "backend", p->backend, "cn", p->cn,
			      "not_before", (json_int_t)p->not_before,
			      "not_after", (json_int_t)p->not_after,
			      "key_usage", (json_int_t)p->key_usage,
			      "challenge", p->challenge, "csr", hex);
	if (o != NULL) {
		if (p->server_keygen)
			json_object_set_new(o, "keygen", json_string("server"));
		if (p->anchors)
			json_object_set_new(o, "anchors", json_true());
		json_object_set_new(o, "dns", names_json(p->dns, p->ndns));
		json_object_set_new(o, "ip", names_json(p->ip, p->nip));
		json_object_set_new(o, "email", names_json(p->email, p->nemail));
		json_object_set_new(o, "eku", names_json(p->eku, p->neku));
		if (p->acme_challenge[0])
			json_object_set_new(o, "acme_challenge", json_string(p->acme_challenge));
		out = json_dumps(o, JSON_COMPACT);
		json_decref(o);
	}
	free(hex);
	return out;
}

static int names_from_json(json_t *a, char **dst, size_t *n, size_t max)
{
	size_t i;
	json_t *v;
	if (!json_is_array(a) || json_array_size(a) > max)
		return -1;
	json_array_foreach(a, i, v) {
		if (!json_is_string(v) || (dst[i] = strdup(json_string_value(v))) == NULL)
			return -1;
		*n = i + 1;
	}
	return 0;
}

/* JSON text of an admitted job -> params. 0 or -1. */
static int params_from_json(const char *text, struct params *p)
{
	json_error_t jerr;
	json_t *o = json_loads(text, 0, &jerr);
	const char *kind, *slot, *dev, *prof, *be, *cn, *chal, *csr;
	json_int_t nb, na, ku;
	json_t *dns, *ip, *email, *eku;
	int rc = -1;

	if (o == NULL)
		return -1;
	if (json_unpack(o, "{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:o, s:o, s:o, s:o}",
			"kind", &kind, "slot", &slot, "device_id", &dev, "profile", &prof,
			"backend", &be, "cn", &cn, "not_before", &nb, "not_after", &na,
			"key_usage", &ku, "challenge", &chal, "csr", &csr, "dns", &dns, "ip", &ip,
			"email", &email, "eku", &eku) != 0)
		goto out;
	fg_strlcpy(p->kind, kind, sizeof p->kind);
	fg_strlcpy(p->slot, slot, sizeof p->slot);
	fg_strlcpy(p->device_id, dev, sizeof p->device_id);
	fg_strlcpy(p->profile, prof, sizeof p->profile);
	fg_strlcpy(p->backend, be, sizeof p->backend);
	fg_strlcpy(p->cn, cn, sizeof p->cn);
	fg_strlcpy(p->challenge, chal, sizeof p->challenge);
	/* absent in jobs admitted before acme_challenge existed */
	const char *ac = json_string_value(json_object_get(o, "acme_challenge"));
	fg_strlcpy(p->acme_challenge, ac ? ac : "", sizeof p->acme_challenge);
	const char *kg = json_string_value(json_object_get(o, "keygen"));
	p->server_keygen = kg != NULL && strcmp(kg, "server") == 0;
	p->anchors = json_is_true(json_object_get(o, "anchors"));
	p->not_before = nb;
	p->not_after = na;
	p->key_usage = (uint32_t)ku;
	if (names_from_json(dns, p->dns, &p->ndns, POLICY_MAX_NAMES) ||
	    names_from_json(ip, p->ip, &p->nip, POLICY_MAX_NAMES) ||
	    names_from_json(email, p->email, &p->nemail, POLICY_MAX_NAMES) ||
	    names_from_json(eku, p->eku, &p->neku, CONFIG_MAX_EKU))
		goto out;
	size_t hl = strlen(csr);
	p->csr = malloc(hl / 2 + 1);
	if (p->csr == NULL)
		goto out;
	ssize_t n = fg_unhex(csr, p->csr, hl / 2 + 1);
	if (n <= 0)
		goto out;
	p->csr_len = (size_t)n;
	rc = 0;
out:
	json_decref(o);
	return rc;
}

/* ---- issuing ---- */

/* The PENDING reply, with the ACME challenges (RFC 8555 8) the device is to
 * serve before it sends the same request again with challenges_ready. */
static void reply_pending(const char *rid, uint32_t ra, const struct fg_issue_result *res,
			  uint8_t **out, size_t *len, const char *msg)
{
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CertReply cr = FLEETGATE__CERT_REPLY__INIT;
	Fleetgate__Challenge ch[16], *chp[16];
	size_t n = res->n_challenges < 16 ? res->n_challenges : 16;

	for (size_t i = 0; i < n; i++) {
		const struct fg_challenge *c = &res->challenges[i];
		fleetgate__challenge__init(&ch[i]);
		ch[i].type = (char *)c->type;
		ch[i].identifier = (char *)c->identifier;
		ch[i].token = (char *)c->token;
		ch[i].key_authorization = (char *)c->key_authorization;
		chp[i] = &ch[i];
	}
	cr.status = FLEETGATE__STATUS__STATUS_PENDING;
	cr.message = (char *)msg;
	cr.retry_after = ra;
	cr.n_challenges = n;
	cr.challenges = n ? chp : NULL;
	env.body_case = FLEETGATE__ENVELOPE__BODY_CERT_REPLY;
	env.cert_reply = &cr;
	pack_env(&env, rid, out, len);
	fg_info("enroll", rid, "%s: %s%s", fg_status_name(cr.status), msg,
		n ? " (challenges handed to the device)" : "");
}

/* The CertReply of an issued certificate, packed once its renewal window
 * is known (store_job_finish_cert calls it inside the transaction). */
struct reply_build {
	Fleetgate__Envelope *env;
	Fleetgate__CertReply *cr;
	const char *rid;
};

static int build_cert_reply(void *arg, const struct store_window *win, unsigned char **reply,
			    size_t *reply_len)
{
	struct reply_build *rb = arg;
	if (win->start > 0 && win->end > win->start) {
		rb->cr->renew_after = win->start;
		rb->cr->renew_before = win->end;
	}
	pack_env(rb->env, rb->rid, reply, reply_len);
	return *reply != NULL ? 0 : -1;
}

/* Ask the job's backend for the certificate and record the outcome. Used
 * for new jobs and, identically, for jobs resumed after a retry or restart:
 * the backend's write-ahead state in the job makes that safe. ready lists
 * the ACME challenge tokens the device says it serves (its
 * acknowledgement, handed to the plugin), n_ready of them. */
static void run_issue(struct worker *w, const char *key, const char *rid, const struct params *p,
		      int poll, char *const *ready, size_t n_ready, uint8_t **out, size_t *len)
{
	char err[512] = "";
	struct backend *b = backends_find(w->bs, p->backend);
	struct fg_issue_result res;
	X509 *cert = NULL;
	memset(&res, 0, sizeof res);

	if (b == NULL) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL * 6, out, len,
			     "backend '%s' of this request is not configured any more; the operator must restore it",
			     p->backend);
		return;
	}
	int claim = backends_job_claim(w->bs, key, rid);
	if (claim != 1) {
		/* another worker is asking the backend about this job now:
		 * its answer is stored, and the retry gets it */
		reply_status(rid, claim == 0 ? FLEETGATE__STATUS__STATUS_PENDING : FLEETGATE__STATUS__STATUS_INTERNAL,
			     1, out, len, "the request is being worked on right now (backend %s); retry in 1 s",
			     p->backend);
		return;
	}
	struct fg_job job = { w->st, key, rid };
	struct fg_issue_request ir = {
		.struct_size = sizeof ir,
		.request_id = rid,
		.device_id = p->device_id,
		.slot = p->slot,
		.renewal = strcmp(p->kind, "renew") == 0,
		.job = &job,
		.csr_der = p->csr,
		.csr_len = p->csr_len,
		.subject_cn = p->cn,
		.dns_names = (const char *const *)p->dns,
		.n_dns = p->ndns,
		.ip_names = (const char *const *)p->ip,
		.n_ip = p->nip,
		.emails = (const char *const *)p->email,
		.n_email = p->nemail,
		.not_before = p->not_before,
		.not_after = p->not_after,
		.key_usage = p->key_usage,
		.ext_key_usage = (const char *const *)p->eku,
		.n_eku = p->neku,
		.profile = p->profile,
		.challenge = p->challenge[0] ? p->challenge : NULL,
		.acme_challenge = p->acme_challenge[0] ? p->acme_challenge : NULL,
		.challenges_ready = (const char *const *)ready,
		.n_challenges_ready = n_ready,
		.server_keygen = p->server_keygen,
	};
	if (poll && b->ops->poll != NULL)
		b->ops->poll(b->state, &ir, &res);
	else
		b->ops->issue(b->state, &ir, &res);

	switch (res.status) {
	case FG_ISSUE_OK:
		break;
	case FG_ISSUE_PENDING: {
		uint32_t ra = res.retry_after ? res.retry_after : 30;
		char msg[1024];
		if (store_job_set_pending(w->st, key, rid, fg_now() + ra, err, sizeof err) != 0)
			fg_err("enroll", rid, "%s", err);
		snprintf(msg, sizeof msg, "the CA (backend %s) has the request pending%s%s; retry in %u s",
			 p->backend, res.message[0] ? ": " : "", res.message, ra);
		reply_pending(rid, ra, &res, out, len, msg);
		goto out;
	}
	case FG_ISSUE_REJECTED: {
		char msg[1024];
		snprintf(msg, sizeof msg, "the CA (backend %s) refused the request: %s", p->backend,
			 res.message[0] ? res.message : "no reason given");
		Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
		Fleetgate__CertReply cr = FLEETGATE__CERT_REPLY__INIT;
		cr.status = FLEETGATE__STATUS__STATUS_DENIED;
		cr.message = msg;
		cr.device_id = (char *)p->device_id;
		env.body_case = FLEETGATE__ENVELOPE__BODY_CERT_REPLY;
		env.cert_reply = &cr;
		pack_env(&env, rid, out, len);
		if (*out && store_job_finish(w->st, key, rid, JOB_FAILED, *out, *len, NULL,
					     "cert.reject", msg, err, sizeof err) != 0)
			fg_err("enroll", rid, "%s", err);
		fg_warn("enroll", rid, "%s", msg);
		goto out;
	}
	default:
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL,
			     res.retry_after ? res.retry_after : RETRY_INTERNAL, out, len,
			     "backend %s could not issue now (%s); the request is kept, retry with the same request id",
			     p->backend, res.message[0] ? res.message : "no detail");
		goto out;
	}

	struct fg_cert_info ci;
	cert = fg_cert_from_der(res.cert_der, res.cert_len, err, sizeof err);
	if (cert == NULL || fg_cert_info(cert, &ci, err, sizeof err) != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len,
			     "backend %s returned an unreadable certificate: %s", p->backend, err);
		goto out;
	}

	if (p->server_keygen && (res.enc_key == NULL || res.enc_key_len == 0)) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len,
			     "backend %s issued without the server-generated key the policy asked for; tell the operator",
			     p->backend);
		goto out;
	}
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CertReply cr = FLEETGATE__CERT_REPLY__INIT;
	ProtobufCBinaryData chain[8];
	char msg[256];
	snprintf(msg, sizeof msg, "issued serial %s by backend %s", ci.serial_hex, p->backend);
	cr.status = FLEETGATE__STATUS__STATUS_OK;
	cr.message = msg;
	cr.cert_der.data = res.cert_der;
	cr.cert_der.len = res.cert_len;
	cr.n_chain_der = res.n_chain < 8 ? res.n_chain : 8;
	for (size_t i = 0; i < cr.n_chain_der; i++) {
		chain[i].data = res.chain_der[i];
		chain[i].len = res.chain_len[i];
	}
	cr.chain_der = chain;
	cr.device_id = (char *)p->device_id;
	cr.not_after = ci.not_after;
	if (p->server_keygen)
		cr.encrypted_key = (ProtobufCBinaryData){ res.enc_key_len, res.enc_key };
	/* the backend's CA chain as trust anchors, when the policy says so */
	struct fg_cert_list anchors;
	ProtobufCBinaryData adata[8];
	memset(&anchors, 0, sizeof anchors);
	if (p->anchors && b->ops->cacerts != NULL) {
		if (b->ops->cacerts(b->state, &anchors, err, sizeof err) == 0) {
			cr.n_trust_anchors_der = anchors.n < 8 ? anchors.n : 8;
			for (size_t i = 0; i < cr.n_trust_anchors_der; i++)
				adata[i] = (ProtobufCBinaryData){ anchors.len[i], anchors.der[i] };
			cr.trust_anchors_der = adata;
		} else {
			fg_warn("enroll", rid, "the policy asked to hand backend %s's CA certificates to the device, which cannot be had now: %s",
				p->backend, err);
		}
	}
	/* the CA's suggested renewal time (ARI), passed on only when it falls
	 * before the certificate's end; a time before its start (a window in
	 * the past: renew now, RFC 9773 4.2) is passed on as its start */
	if (res.renew_after > 0 && res.renew_after < ci.not_after)
		cr.renew_after = res.renew_after > ci.not_before ? res.renew_after : ci.not_before;
	env.body_case = FLEETGATE__ENVELOPE__BODY_CERT_REPLY;
	env.cert_reply = &cr;
	/* without the CA's suggestion, the gateway assigns a renewal window
	 * (renewal smoothing), in the transaction that records the certificate */
	struct store_renewal_rule rule = { w->cfg->renewal_from, w->cfg->renewal_to,
					   w->cfg->renewal_earliest, w->cfg->renewal_max_per_hour };
	int smooth = w->cfg->renewal_smoothing && cr.renew_after == 0;
	struct reply_build rb = { &env, &cr, rid };
	struct store_window win;

	struct store_cert sc;
	memset(&sc, 0, sizeof sc);
	fg_strlcpy(sc.serial_hex, ci.serial_hex, sizeof sc.serial_hex);
	fg_strlcpy(sc.device_id, p->device_id, sizeof sc.device_id);
	fg_strlcpy(sc.slot, p->slot, sizeof sc.slot);
	fg_strlcpy(sc.backend, p->backend, sizeof sc.backend);
	fg_strlcpy(sc.request_id, rid, sizeof sc.request_id);
	fg_strlcpy(sc.subject, ci.subject, sizeof sc.subject);
	sc.not_before = ci.not_before;
	sc.not_after = ci.not_after;
	sc.der = res.cert_der;
	sc.der_len = res.cert_len;
	char detail[512];
	snprintf(detail, sizeof detail,
		 "{\"serial\":\"%s\",\"slot\":\"%s\",\"profile\":\"%s\",\"backend\":\"%s\"}",
		 ci.serial_hex, p->slot, p->profile, p->backend);
	int frc = store_job_finish_cert(w->st, key, rid, &sc, smooth ? &rule : NULL, build_cert_reply,
					&rb, out, len, &win,
					strcmp(p->kind, "renew") == 0 ? "cert.renew" : "cert.issue",
					detail, err, sizeof err);
	fg_cert_list_clear(&anchors);
	if (frc != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len,
			     "could not record the certificate (%s); retry with the same request id", err);
		goto out;
	}
	if (win.over) {
		stats_renewal_over_ceiling();
		fg_warn("enroll", rid, "every hour of the renewal range of serial %s is at renewal.max_per_hour (%ld); its window is above the ceiling: raise the ceiling or widen renewal.window",
			ci.serial_hex, w->cfg->renewal_max_per_hour);
	}
	char until[32], ra[32], rb2[32];
	struct fg_log_fields lf = { p->device_id, ci.serial_hex };
	fg_log_with(FG_LOG_INFO, "enroll", rid, &lf, "%s device %s slot %s: serial %s, %s, until %s (backend %s)%s%s%s%s",
		strcmp(p->kind, "renew") == 0 ? "renewed" : "enrolled", p->device_id, p->slot,
		ci.serial_hex, ci.subject, fg_time_iso(ci.not_after, until, sizeof until), p->backend,
		cr.renew_before ? "; renewal window " : cr.renew_after ? "; the CA suggests renewal at " : "",
		cr.renew_after ? fg_time_iso(cr.renew_after, ra, sizeof ra) : "",
		cr.renew_before ? " to " : "",
		cr.renew_before ? fg_time_iso(cr.renew_before, rb2, sizeof rb2) : "");
out:
	backends_job_release(w->bs, key, rid);
	X509_free(cert);
	fg_issue_result_clear(&res);
}

/* Resume an open job for a retried request id. A request that carries an
 * acknowledgement of ACME challenges (ready) goes to the backend at once:
 * the CA can validate only after the plugin has heard it. */
static void resume_job(struct worker *w, const char *key, const struct store_job *job,
		       char *const *ready, size_t n_ready, uint8_t **out, size_t *len)
{
	struct params p;
	memset(&p, 0, sizeof p);
	if (job->params_json == NULL || params_from_json(job->params_json, &p) != 0) {
		reply_status(job->request_id, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL * 6,
			     out, len, "the stored job for this request is unreadable; tell the operator");
		params_clear(&p);
		return;
	}
	if (job->state == JOB_PENDING && job->next_attempt > fg_now() && n_ready == 0) {
		uint32_t ra = (uint32_t)(job->next_attempt - fg_now());
		reply_status(job->request_id, FLEETGATE__STATUS__STATUS_PENDING, ra ? ra : 1, out, len,
			     "the CA (backend %s) has the request pending; retry in %u s", p.backend, ra);
	} else {
		run_issue(w, key, job->request_id, &p, job->state == JOB_PENDING, ready, n_ready, out, len);
	}
	params_clear(&p);
}

/* ---- polling pending jobs ---- */

struct due {
	char key[41];
	char rid[65];
};

struct due_list {
	struct due *v;
	size_t n, cap;
	int64_t now;
};

static int collect_due(void *arg, const struct store_job *j)
{
	struct due_list *d = arg;
	if (j->state != JOB_PENDING || j->next_attempt > d->now)
		return 0;
	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 16;
		struct due *nv = realloc(d->v, nc * sizeof *nv);
		if (nv == NULL)
			return 1;
		d->v = nv;
		d->cap = nc;
	}
	fg_strlcpy(d->v[d->n].key, j->curve_key, sizeof d->v[0].key);
	fg_strlcpy(d->v[d->n].rid, j->request_id, sizeof d->v[0].rid);
	d->n++;
	return 0;
}

int worker_poll_due(struct worker *w)
{
	struct due_list d = { NULL, 0, 0, fg_now() };
	char err[512];
	int polled = 0;
	if (store_job_list_open(w->st, collect_due, &d, err, sizeof err) != 0) {
		fg_err("poller", NULL, "cannot list the pending jobs: %s", err);
		free(d.v);
		return -1;
	}
	for (size_t i = 0; i < d.n; i++) {
		struct store_job job;
		uint8_t *out = NULL;
		size_t len = 0;
		memset(&job, 0, sizeof job);
		/* read again: the device may have collected it meanwhile */
		if (store_job_get(w->st, d.v[i].key, d.v[i].rid, &job, err, sizeof err) == 1 &&
		    job.state == JOB_PENDING && job.next_attempt <= fg_now()) {
			fg_debug("poller", job.request_id, "asking backend %s about the pending request",
				 job.backend);
			resume_job(w, d.v[i].key, &job, NULL, 0, &out, &len);
			polled++;
		}
		free(out);
		store_job_clear(&job);
	}
	free(d.v);
	return polled;
}

/* ---- request handling ---- */

static const char *nz(const char *s)
{
	return s && *s ? s : NULL;
}

static char *facts_json(const Fleetgate__Facts *f)
{
	if (f == NULL)
		return NULL;
	json_t *o = json_object();
	json_object_set_new(o, "hostname", json_string(f->hostname));
	json_object_set_new(o, "machine_id", json_string(f->machine_id));
	json_object_set_new(o, "os_id", json_string(f->os_id));
	json_object_set_new(o, "os_version", json_string(f->os_version));
	json_object_set_new(o, "os_pretty_name", json_string(f->os_pretty_name));
	json_object_set_new(o, "kernel_release", json_string(f->kernel_release));
	json_object_set_new(o, "arch", json_string(f->arch));
	json_object_set_new(o, "dmi_product_uuid", json_string(f->dmi_product_uuid));
	json_object_set_new(o, "dmi_product_serial", json_string(f->dmi_product_serial));
	json_object_set_new(o, "secure_boot", f->secure_boot < 0 ? json_null()
					      : json_boolean(f->secure_boot > 0));
	json_object_set_new(o, "tpm_present", json_boolean(f->tpm_present));
	json_object_set_new(o, "agent_version", json_string(f->agent_version));
	char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return s;
}

/* Check a presented token without consuming it; the consumption happens
 * atomically in store_job_admit. 0 when usable, else -1 with a message. */
static int token_check(struct worker *w, const char *token, char hash[65], struct store_token *tok,
		       char *err, size_t errlen)
{
	if (token == NULL || *token == '\0') {
		fg_seterr(err, errlen, "this device is not enrolled and sent no enrollment token; "
			  "install a bootstrap bundle from the operator (fleetgate token create --bundle)");
		return -1;
	}
	if (!fg_token_wellformed(token)) {
		fg_seterr(err, errlen, "the enrollment token is malformed; check the bootstrap bundle");
		return -1;
	}
	fg_token_hash(token, hash);
	int r = store_token_lookup(w->st, hash, tok, err, errlen);
	if (r < 0)
		return -1;
	char when[32];
	if (r == 0)
		fg_seterr(err, errlen, "the enrollment token is unknown to this gateway; ask the operator for a new bundle");
	else if (tok->revoked)
		fg_seterr(err, errlen, "the enrollment token %s was revoked; ask the operator for a new bundle",
			  tok->id);
	else if (tok->uses_left <= 0)
		fg_seterr(err, errlen, "the enrollment token %s has been used up; ask the operator for a new bundle",
			  tok->id);
	else if (tok->expires_at <= fg_now())
		fg_seterr(err, errlen, "the enrollment token %s expired at %s; ask the operator for a new bundle",
			  tok->id, fg_time_iso(tok->expires_at, when, sizeof when));
	else
		return 0;
	return -1;
}

/*
 * A usable token's bindings (see binding.h): the facts must match the
 * attributes it is bound to, and a token made for a pre-registered device
 * (fleetgate device import) enrolls as that device, which must still be
 * waiting for enrollment. ti and bdev are filled (the caller clears them);
 * *bound is set for a device token. 0, or -1 with the message for the
 * device (an audit record names the refusal).
 */
static void fill_policy_facts(struct policy_facts *pf, const Fleetgate__Facts *f);

static int token_bindings(struct worker *w, const char *hash, const Fleetgate__Facts *facts,
			  const char *protocol, const char *rid, struct store_token_info *ti,
			  struct store_device *bdev, int *bound, char *err, size_t errlen)
{
	struct policy_facts pf;
	char why[512] = "";
	*bound = 0;
	int r = store_token_info_get(w->st, NULL, hash, ti, err, errlen);
	if (r <= 0) {
		if (r == 0)
			fg_seterr(err, errlen, "the enrollment token is unknown to this gateway; ask the operator for a new bundle");
		return -1;
	}
	fill_policy_facts(&pf, facts);
	if (binding_check(ti->bound_json, &pf, why, sizeof why) != 0) {
		if (protocol != NULL && strcmp(protocol, "est") == 0)   /* no facts to match */
			fg_seterr(err, errlen, "enrollment token %s refused: %s; it is bound to device facts, which EST does not carry: ask the operator for a token without --bind",
				  ti->t.id, why);
		else
			fg_seterr(err, errlen, "enrollment token %s refused: %s; run the agent on the device the token was made for, or ask the operator for a new bundle",
				  ti->t.id, why);
		json_t *d = json_pack("{s:s, s:s}", "token", ti->t.id, "reason", why);
		char *ds = d ? json_dumps(d, JSON_COMPACT) : NULL;
		store_audit(w->st, "token.mismatch", ti->device_id, rid, ds ? ds : "{}", fg_now(), NULL, 0);
		free(ds);
		json_decref(d);
		return -1;
	}
	if (ti->device_id[0] == '\0')
		return 0;
	r = store_device_get(w->st, ti->device_id, bdev, err, errlen);
	if (r < 0)
		return -1;
	if (r == 0 || bdev->state != DEVICE_REGISTERED) {
		fg_seterr(err, errlen, "enrollment token %s was made for device %s, which is %s; ask the operator for a new bundle",
			  ti->t.id, ti->device_id, r == 0 ? "gone" : store_device_state_name(bdev->state));
		return -1;
	}
	*bound = 1;
	return 0;
}

/* Renewal checks: the certificate being renewed is one this gateway issued
 * to this very device, is still valid, and the request is signed by its
 * key. 0, or -1 with a message (and *status set). */
static int renew_check(struct worker *w, const struct store_device *dev,
		       const struct enroll_req *rr, const char *rid, Fleetgate__Status *status,
		       char *err, size_t errlen)
{
	struct store_cert rec;
	struct fg_cert_info ci;
	char e2[256] = "";
	int rc = -1;
	memset(&rec, 0, sizeof rec);

	*status = FLEETGATE__STATUS__STATUS_UNAUTHORIZED;
	X509 *cur = fg_cert_from_der(rr->cur_cert, rr->cur_cert_len, e2, sizeof e2);
	if (cur == NULL || fg_cert_info(cur, &ci, e2, sizeof e2) != 0) {
		*status = FLEETGATE__STATUS__STATUS_BAD_REQUEST;
		fg_seterr(err, errlen, "the certificate to renew is unreadable: %s", e2);
		goto out;
	}
	int r = store_cert_get(w->st, ci.serial_hex, &rec, e2, sizeof e2);
	if (r < 0) {
		*status = FLEETGATE__STATUS__STATUS_INTERNAL;
		fg_seterr(err, errlen, "%s", e2);
		goto out;
	}
	if (r == 0 || rec.der_len != rr->cur_cert_len ||
	    memcmp(rec.der, rr->cur_cert, rec.der_len) != 0) {
		fg_seterr(err, errlen, "certificate serial %s was not issued by this gateway; enroll with a token instead",
			  ci.serial_hex);
		goto out;
	}
	if (strcmp(rec.device_id, dev->id) != 0) {
		fg_seterr(err, errlen, "certificate serial %s belongs to another device; a device may renew only its own certificates",
			  ci.serial_hex);
		fg_warn("enroll", rid, "device %s tried to renew certificate %s of device %s", dev->id,
			ci.serial_hex, rec.device_id);
		goto out;
	}
	if (rec.revoked) {
		fg_seterr(err, errlen, "certificate serial %s is revoked and cannot be renewed; ask the operator for a new bundle",
			  ci.serial_hex);
		goto out;
	}
	char when[32];
	if (rec.not_after <= fg_now()) {
		fg_seterr(err, errlen, "certificate serial %s expired at %s and cannot be renewed; enroll again with a new token",
			  ci.serial_hex, fg_time_iso(rec.not_after, when, sizeof when));
		goto out;
	}
	if (strcmp(rec.slot, rr->slot) != 0) {
		*status = FLEETGATE__STATUS__STATUS_BAD_REQUEST;
		fg_seterr(err, errlen, "certificate serial %s belongs to slot '%s', not '%s'",
			  ci.serial_hex, rec.slot, rr->slot);
		goto out;
	}
	/* EST re-enrollment: the TLS handshake proved the key of this very
	 * certificate (the front-end passes the peer certificate) */
	if (!rr->pop_by_tls &&
	    fg_pop_verify(cur, rid, rr->csr, rr->csr_len, rr->pop, rr->pop_len, e2, sizeof e2) != 0) {
		fg_seterr(err, errlen, "proof of possession failed: the renewal is not signed by the key of certificate %s (%s)",
			  ci.serial_hex, e2);
		goto out;
	}
	rc = 0;
out:
	X509_free(cur);
	store_cert_clear(&rec);
	return rc;
}

static void fill_policy_facts(struct policy_facts *pf, const Fleetgate__Facts *f)
{
	memset(pf, 0, sizeof *pf);
	pf->secure_boot = -1;
	if (f == NULL)
		return;
	pf->hostname = nz(f->hostname);
	pf->machine_id = nz(f->machine_id);
	pf->os_id = nz(f->os_id);
	pf->os_version = nz(f->os_version);
	pf->os_pretty_name = nz(f->os_pretty_name);
	pf->kernel_release = nz(f->kernel_release);
	pf->arch = nz(f->arch);
	pf->dmi_product_uuid = nz(f->dmi_product_uuid);
	pf->dmi_product_serial = nz(f->dmi_product_serial);
	pf->agent_version = nz(f->agent_version);
	pf->secure_boot = f->secure_boot < 0 ? -1 : f->secure_boot > 0;
	pf->tpm_present = f->tpm_present;
}

#define MAX_CSRATTRS_BACKENDS 16
#define MAX_CSRATTRS_OIDS 32

/* What the backends' CAs ask of CSRs, for req.backend_csrattrs: the
 * strings live in a[], the policy's view points into them. */
struct csrattrs_set {
	struct policy_csrattrs v[MAX_CSRATTRS_BACKENDS];
	struct fg_csr_attrs a[MAX_CSRATTRS_BACKENDS];
	const char *oids[MAX_CSRATTRS_BACKENDS][MAX_CSRATTRS_OIDS];
	size_t n;
};

/* Ask every backend that offers csr_attrs (EST: its cached /csrattrs). A
 * backend that cannot say now is left out, with a debug line: the policy
 * sees no entry rather than a guess. */
static void csrattrs_collect(struct worker *w, struct csrattrs_set *cs, const char *rid)
{
	char err[512];
	cs->n = 0;
	for (size_t i = 0; i < w->cfg->nbackends && cs->n < MAX_CSRATTRS_BACKENDS; i++) {
		struct backend *b = backends_find(w->bs, w->cfg->backends[i].name);
		if (b == NULL || b->ops->csr_attrs == NULL)
			continue;
		struct fg_csr_attrs *a = &cs->a[cs->n];
		memset(a, 0, sizeof *a);
		err[0] = '\0';
		int r = b->ops->csr_attrs(b->state, a, err, sizeof err);
		if (r < 0)
			fg_debug("enroll", rid, "backend %s cannot say what its CA asks of CSRs: %s", b->name, err);
		if (r != 1)
			continue;
		a->key_type[sizeof a->key_type - 1] = '\0';
		a->oids[sizeof a->oids - 1] = '\0';
		struct policy_csrattrs *v = &cs->v[cs->n];
		v->backend = b->name;
		v->key_type = a->key_type;
		v->oids = cs->oids[cs->n];
		v->noids = 0;
		char *save = NULL;
		for (char *t = strtok_r(a->oids, " ", &save); t != NULL && v->noids < MAX_CSRATTRS_OIDS;
		     t = strtok_r(NULL, " ", &save))
			cs->oids[cs->n][v->noids++] = t;
		cs->n++;
	}
}

/*
 * A CA that takes the CSR as it is (SCEP, most EST servers) must get one
 * naming exactly what the policy decided, with its challengePassword: the
 * backend says so through csr_needs. When the device's CSR differs, it is
 * told to rebuild it (STATUS_RESUBMIT with the template, same request id)
 * before anything is admitted or consumed. 1 when the CSR will do, else 0
 * with the reply made.
 */
static int csr_needs_met(struct worker *w, const struct params *p, const uint8_t *csr,
			 size_t csr_len, const char *rid, uint8_t **out, size_t *len)
{
	struct backend *b = backends_find(w->bs, p->backend);
	struct fg_csr_needs needs;
	char err[512] = "", why[256] = "";

	if (b == NULL || b->ops->csr_needs == NULL)
		return 1;
	struct fg_issue_request ir = {
		.struct_size = sizeof ir,
		.request_id = rid,
		.device_id = p->device_id,
		.slot = p->slot,
		.renewal = strcmp(p->kind, "renew") == 0,
		.subject_cn = p->cn,
		.dns_names = (const char *const *)p->dns,
		.n_dns = p->ndns,
		.ip_names = (const char *const *)p->ip,
		.n_ip = p->nip,
		.emails = (const char *const *)p->email,
		.n_email = p->nemail,
		.profile = p->profile,
		.challenge = p->challenge[0] ? p->challenge : NULL,
		.acme_challenge = p->acme_challenge[0] ? p->acme_challenge : NULL,
		.csr_der = csr,
		.csr_len = csr_len,
		.csr_needs_size = sizeof needs,
		.server_keygen = p->server_keygen,
	};
	memset(&needs, 0, sizeof needs);
	if (b->ops->csr_needs(b->state, &ir, &needs, err, sizeof err) != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len,
			     "backend %s cannot take requests now: %s", p->backend, err);
		return 0;
	}
	needs.challenge[sizeof needs.challenge - 1] = '\0';
	needs.key_type[sizeof needs.key_type - 1] = '\0';
	if (needs.key_type[0] != '\0' && fg_key_type_parse(needs.key_type) < 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len,
			     "backend %s asks for key type '%s', which no agent makes; tell the operator",
			     p->backend, needs.key_type);
		return 0;
	}
	if (!needs.names_from_csr && needs.challenge[0] == '\0' && needs.key_type[0] == '\0')
		return 1;
	/* the template always names what the policy decided */
	struct fg_csr_names want = {
		.cn = p->cn,
		.dns = (const char *const *)p->dns,
		.ndns = p->ndns,
		.ip = (const char *const *)p->ip,
		.nip = p->nip,
		.email = (const char *const *)p->email,
		.nemail = p->nemail,
		.challenge = needs.challenge,
	};
	if (needs.key_type[0] != '\0')
		snprintf(why, sizeof why, "the CA takes no key of this type; make a %s key", needs.key_type);
	else if (fg_csr_matches(csr, csr_len, &want, why, sizeof why))
		return 1;

	char msg[512];
	snprintf(msg, sizeof msg,
		 "the CA behind backend %s takes the CSR as it is, and this one does not fit (%s): rebuild it from the template with the same key and request id",
		 p->backend, why);
	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CertReply cr = FLEETGATE__CERT_REPLY__INIT;
	Fleetgate__CsrTemplate tpl = FLEETGATE__CSR_TEMPLATE__INIT;
	tpl.subject_cn = (char *)p->cn;
	tpl.dns = (char **)p->dns;
	tpl.n_dns = p->ndns;
	tpl.ip = (char **)p->ip;
	tpl.n_ip = p->nip;
	tpl.email = (char **)p->email;
	tpl.n_email = p->nemail;
	tpl.challenge_password = needs.challenge;
	tpl.key_type = needs.key_type;
	cr.status = FLEETGATE__STATUS__STATUS_RESUBMIT;
	cr.message = msg;
	cr.csr_template = &tpl;
	env.body_case = FLEETGATE__ENVELOPE__BODY_CERT_REPLY;
	env.cert_reply = &cr;
	pack_env(&env, rid, out, len);
	fg_info("enroll", rid, "resubmit: %s", msg);
	explicit_bzero(needs.challenge, sizeof needs.challenge);
	return 0;
}

/* Enrollment or renewal of one slot, from any front-end (enroll.h). */
static void handle_cert(struct worker *w, const struct enroll_req *r, uint8_t **out, size_t *len)
{
	const char *rid = r->request_id;
	const char *key = r->key;
	const int renew = r->renew;
	const char *slot = r->slot;
	const ProtobufCBinaryData csrbin = { r->csr_len, (uint8_t *)r->csr }, *csr = &csrbin;
	const Fleetgate__Facts *facts = r->facts;
	struct store_job job;
	struct store_device dev;
	struct store_token tok;
	struct store_token_info ti;      /* the token's bindings */
	struct store_device bdev;        /* the pre-registered device of a device token */
	char serial[65] = "", *attrs = NULL;
	int bound = 0;
	struct fg_csr_info ci;
	struct policy_decision dec;
	struct params p;
	char err[1024] = "", hash[65] = "", devid[40] = "";
	char *fj = NULL, *pj = NULL;
	int known, rc;

	memset(&job, 0, sizeof job);
	memset(&dev, 0, sizeof dev);
	memset(&tok, 0, sizeof tok);
	memset(&ti, 0, sizeof ti);
	memset(&bdev, 0, sizeof bdev);
	memset(&ci, 0, sizeof ci);
	memset(&dec, 0, sizeof dec);
	memset(&p, 0, sizeof p);

	/* 1. A known request id: the stored answer, or the open job resumed. */
	rc = store_job_get(w->st, key, rid, &job, err, sizeof err);
	if (rc < 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len, "%s", err);
		goto out;
	}
	if (rc == 1) {
		fg_strlcpy(w->stats_backend, job.backend, sizeof w->stats_backend);
		if (job.state == JOB_DONE || job.state == JOB_FAILED) {
			*out = malloc(job.reply_len);
			if (*out != NULL) {
				memcpy(*out, job.reply, job.reply_len);
				*len = job.reply_len;
			}
			fg_debug("enroll", rid, "repeated request: stored answer returned");
		} else {
			resume_job(w, key, &job, r->challenges_ready, r->n_challenges_ready, out, len);
		}
		goto out;
	}

	/* 2. Who is asking. */
	known = store_device_by_key(w->st, key, &dev, err, sizeof err);
	if (known < 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len, "%s", err);
		goto out;
	}
	if (known && dev.state != DEVICE_ACTIVE) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_UNAUTHORIZED, 0, out, len,
			     "device %s is %s and gets no certificates; ask the operator to re-provision it",
			     dev.id, store_device_state_name(dev.state));
		goto out;
	}
	if (!known && renew) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_UNAUTHORIZED, 0, out, len,
			     "this device is not enrolled (its CURVE key is unknown to the gateway); enroll with a token first");
		goto out;
	}
	if ((!known || (r->token_required && !renew)) &&
	    token_check(w, r->token, hash, &tok, err, sizeof err) != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_UNAUTHORIZED, 0, out, len, "%s", err);
		goto out;
	}
	if (hash[0] && token_bindings(w, hash, facts, r->protocol, rid, &ti, &bdev, &bound, err,
				   sizeof err) != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_UNAUTHORIZED, 0, out, len, "%s", err);
		goto out;
	}
	/* a known device presenting a token (EST): not one made for another device */
	if (known && bound) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_UNAUTHORIZED, 0, out, len,
			     "enrollment token %s was made for device %s, but this key belongs to device %s; use a token of this device's group",
			     ti.t.id, bdev.id, dev.id);
		goto out;
	}
	/* what the policy sees of a pre-registered device: serial, attributes */
	if ((known || bound) &&
	    store_device_attrs_get(w->st, known ? dev.id : bdev.id, serial, &attrs, err, sizeof err) < 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len, "%s", err);
		goto out;
	}

	/* 3. What is asked. */
	if (!slot_valid(slot)) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_BAD_REQUEST, 0, out, len,
			     "slot name '%.64s' is invalid: use 1-63 of A-Z a-z 0-9 . _ -", slot);
		goto out;
	}
	if (fg_csr_check(csr->data, csr->len, &ci, NULL, err, sizeof err) != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_BAD_REQUEST, 0, out, len, "bad CSR: %s", err);
		goto out;
	}
	if (renew) {
		Fleetgate__Status st;
		if (renew_check(w, &dev, r, rid, &st, err, sizeof err) != 0) {
			reply_status(rid, st, st == FLEETGATE__STATUS__STATUS_INTERNAL ? RETRY_INTERNAL : 0,
				     out, len, "%s", err);
			goto out;
		}
	}
	if (known || bound)
		fg_strlcpy(devid, known ? dev.id : bdev.id, sizeof devid);
	else if (fg_id_new("dev_", 8, devid, sizeof devid) != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len,
			     "cannot draw a device id");
		goto out;
	}

	/* 4. The policy decides. */
	struct csrattrs_set cas;
	csrattrs_collect(w, &cas, rid);
	struct policy_request preq = {
		.protocol = r->protocol ? r->protocol : "zmq",
		.request_id = rid,
		.slot = slot,
		.renew = renew,
		.new_device = !known,
		.device_id = devid,
		.device_group = known ? dev.group : bound ? bdev.group : tok.group,
		.device_hostname = known ? dev.hostname
				   : bound && bdev.hostname[0] ? bdev.hostname
				   : (facts ? nz(facts->hostname) : NULL),
		.token_group = hash[0] ? tok.group : NULL,
		.csr_cn = ci.cn,
		.csr_dns = (const char *const *)ci.dns,
		.csr_ndns = ci.ndns,
		.csr_key_type = ci.key_type,
		.csr_curve = nz(ci.curve),
		.csr_key_bits = ci.key_bits,
		.device_serial = nz(serial),
		.device_attrs_json = attrs,
		.token_bound_json = hash[0] ? ti.bound_json : NULL,
		.backend_csrattrs = cas.v,
		.nbackend_csrattrs = cas.n,
		.profile = r->profile,
	};
	fill_policy_facts(&preq.facts, facts);
	if (policy_enroll(w->pol, &preq, &dec, err, sizeof err) != 0) {
		stats_policy_error();
		json_t *d = json_pack("{s:s, s:s}", "slot", slot, "error", err);
		char *ds = d ? json_dumps(d, JSON_COMPACT) : NULL;
		store_audit(w->st, "policy.error", known ? devid : NULL, rid, ds ? ds : "{}", fg_now(),
			    NULL, 0);
		free(ds);
		json_decref(d);
		reply_status(rid, FLEETGATE__STATUS__STATUS_DENIED, 0, out, len,
			     "the enrollment policy failed on this request (%s); the operator must fix the policy",
			     err);
		goto out;
	}
	if (!dec.allow) {
		json_t *d = json_pack("{s:s, s:s}", "slot", slot, "reason", dec.reason);
		char *ds = d ? json_dumps(d, JSON_COMPACT) : NULL;
		store_audit(w->st, renew ? "renew.deny" : "enroll.deny", known ? devid : NULL, rid,
			    ds ? ds : "{}", fg_now(), NULL, 0);
		free(ds);
		json_decref(d);
		reply_status(rid, FLEETGATE__STATUS__STATUS_DENIED, 0, out, len, "denied by policy: %s",
			     dec.reason[0] ? dec.reason : "no reason given");
		goto out;
	}

	/* 5. Clamp to the profile, then make the job durable. */
	int64_t now = fg_now();
	fg_strlcpy(p.kind, renew ? "renew" : "enroll", sizeof p.kind);
	fg_strlcpy(p.slot, slot, sizeof p.slot);
	fg_strlcpy(p.device_id, devid, sizeof p.device_id);
	int pr = params_from_decision(w, &dec, r->profile, &p, now, rid, err, sizeof err);
	fg_strlcpy(w->stats_backend, p.backend, sizeof w->stats_backend);
	if (pr != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_DENIED, 0, out, len,
			     "the policy's decision does not fit the gateway config: %s; the operator must fix the policy",
			     err);
		goto out;
	}
	if (csr_needs_met(w, &p, csr->data, csr->len, rid, out, len) != 1)
		goto out;
	p.csr = malloc(csr->len);
	if (p.csr == NULL)
		goto oom;
	memcpy(p.csr, csr->data, csr->len);
	p.csr_len = csr->len;
	fj = facts_json(facts);
	pj = params_to_json(&p);
	if (pj == NULL)
		goto oom;
	struct store_admit adm = {
		.request_id = rid,
		.curve_key = key,
		.kind = p.kind,
		.slot = slot,
		.backend = p.backend,
		.params_json = pj,
		.token_hash = hash[0] ? hash : NULL,
		.device_id = devid,
		.create_device = !known,
		.group = bound ? bdev.group : tok.group,
		.hostname = facts ? facts->hostname : "",
		.facts_json = fj,
		.now = now,
	};
	rc = bound ? store_job_admit_bound(w->st, &adm, err, sizeof err)
		   : store_job_admit(w->st, &adm, err, sizeof err);
	if (rc == STORE_E_NOT_REGISTERED) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_UNAUTHORIZED, 0, out, len, "%s", err);
		goto out;
	}
	if (rc == STORE_E_TOKEN) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_UNAUTHORIZED, 0, out, len,
			     "the enrollment token %s was used up by another request a moment ago; ask the operator for a new bundle",
			     tok.id);
		goto out;
	}
	if (rc == STORE_E_DUPLICATE || rc == STORE_E_KEY_TAKEN) {
		/* A concurrent twin of this request (same key) got in first:
		 * the agent retries and gets that one's answer. */
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, 1, out, len,
			     "a concurrent request from this device is in progress; retry in a second");
		goto out;
	}
	if (rc != 0) {
		reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len,
			     "could not record the request (%s); nothing was issued, retry with the same request id",
			     err);
		goto out;
	}

	/* 6. Issue and record. */
	run_issue(w, key, rid, &p, 0, r->challenges_ready, r->n_challenges_ready, out, len);
	goto out;
oom:
	reply_status(rid, FLEETGATE__STATUS__STATUS_INTERNAL, RETRY_INTERNAL, out, len, "out of memory");
out:
	free(fj);
	free(pj);
	free(attrs);
	store_token_info_clear(&ti);
	store_device_clear(&bdev);
	params_clear(&p);
	policy_decision_clear(&dec);
	fg_csr_info_clear(&ci);
	store_device_clear(&dev);
	store_job_clear(&job);
}

/* Check-in: record that the device is alive and its facts; tell it when to
 * come back. Commands arrive here in a later version of the gateway. */
#define MAX_COMMANDS 16      /* commands handed out per check-in; the rest follow */
#define MAX_WINDOWS 32       /* renewal windows per check-in answer */
#define MAX_ANCHOR_BACKENDS 16 /* backends asked for update-trust anchors */

struct cmd_batch {
	struct store_command c[MAX_COMMANDS];
	size_t n;
};

static int collect_command(void *arg, const struct store_command *c)
{
	struct cmd_batch *b = arg;
	b->c[b->n++] = *c;
	return b->n == MAX_COMMANDS;
}

/* Every backend's CA certificates, for an update-trust command: the lists
 * go to lists (cleared by the caller), the DER to bin. Returns the count. */
static size_t current_anchors(struct worker *w, struct fg_cert_list *lists, size_t *nlists,
			      ProtobufCBinaryData *bin, size_t max)
{
	size_t n = 0;
	char err[512];
	for (size_t i = 0; i < w->cfg->nbackends && i < MAX_ANCHOR_BACKENDS; i++) {
		struct backend *b = backends_find(w->bs, w->cfg->backends[i].name);
		struct fg_cert_list *l = &lists[(*nlists)];
		if (b == NULL || b->ops->cacerts == NULL || b->ops->cacerts(b->state, l, err, sizeof err) != 0)
			continue;
		(*nlists)++;
		for (size_t j = 0; j < l->n && n < max; j++) {
			size_t k = 0;     /* the same CA under two backends goes once */
			while (k < n && !(bin[k].len == l->len[j] && memcmp(bin[k].data, l->der[j], l->len[j]) == 0))
				k++;
			if (k == n)
				bin[n++] = (ProtobufCBinaryData){ l->len[j], l->der[j] };
		}
	}
	return n;
}

static void handle_checkin(struct worker *w, const char *key, const Fleetgate__Envelope *env,
			   uint8_t **out, size_t *len)
{
	const char *rid = env->request_id;
	struct store_device dev;
	char err[512] = "";
	char *fj = NULL;
	Fleetgate__Envelope renv = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CheckInReply cr = FLEETGATE__CHECK_IN_REPLY__INIT;
	memset(&dev, 0, sizeof dev);

	renv.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY;
	renv.checkin_reply = &cr;
	int r = store_device_by_key(w->st, key, &dev, err, sizeof err);
	if (r != 1 || dev.state != DEVICE_ACTIVE) {
		cr.status = r < 0 ? FLEETGATE__STATUS__STATUS_INTERNAL : FLEETGATE__STATUS__STATUS_UNAUTHORIZED;
		if (r == 0)
			snprintf(err, sizeof err, "this device is not enrolled; enroll with a token first");
		else if (r == 1)
			snprintf(err, sizeof err, "this device is %s; ask the operator to re-provision it",
				 store_device_state_name(dev.state));
		cr.message = err;
		pack_env(&renv, rid, out, len);
		goto out;
	}
	const Fleetgate__Facts *f = env->checkin->facts;
	fj = facts_json(f);
	if (store_device_touch(w->st, dev.id, f && f->hostname[0] ? f->hostname : dev.hostname, fj,
			       fg_now(), err, sizeof err) != 0) {
		cr.status = FLEETGATE__STATUS__STATUS_INTERNAL;
		cr.message = err;
		pack_env(&renv, rid, out, len);
		goto out;
	}
	/* answers to earlier commands */
	for (size_t i = 0; i < env->checkin->n_results; i++) {
		const Fleetgate__CommandResult *res = env->checkin->results[i];
		if (store_command_result(w->st, dev.id, res->id, res->ok, res->message, fg_now(), err,
					 sizeof err) < 0)
			fg_err("checkin", rid, "device %s: %s", dev.id, err);
		else
			fg_info("checkin", rid, "device %s: command %s %s: %s", dev.id, res->id,
				res->ok ? "done" : "failed", res->message);
	}
	struct cmd_batch cb = { 0 };
	if (store_command_list(w->st, dev.id, 1, collect_command, &cb, err, sizeof err) != 0)
		fg_err("checkin", rid, "device %s: cannot read its commands: %s", dev.id, err);
	Fleetgate__Command cmds[MAX_COMMANDS], *cmdp[MAX_COMMANDS];
	struct fg_cert_list anchors[MAX_ANCHOR_BACKENDS];
	ProtobufCBinaryData anchor_bin[64];
	size_t nanchors = 0, nlists = 0;
	memset(anchors, 0, sizeof anchors);
	for (size_t i = 0; i < cb.n; i++) {
		fleetgate__command__init(&cmds[i]);
		cmds[i].id = cb.c[i].id;
		cmds[i].kind = cb.c[i].kind;
		cmds[i].slot = cb.c[i].slot;
		if (strcmp(cb.c[i].kind, "update-trust") == 0) {
			if (nlists == 0)
				nanchors = current_anchors(w, anchors, &nlists, anchor_bin, 64);
			cmds[i].n_trust_anchors_der = nanchors;
			cmds[i].trust_anchors_der = anchor_bin;
		}
		cmdp[i] = &cmds[i];
		if (cb.c[i].state == COMMAND_QUEUED &&
		    store_command_delivered(w->st, dev.id, cb.c[i].id, fg_now(), err, sizeof err) != 0)
			fg_err("checkin", rid, "device %s: %s", dev.id, err);
	}
	/* the renewal windows of the certificates it holds, as they are now */
	Fleetgate__RenewalWindow wins[MAX_WINDOWS], *winp[MAX_WINDOWS];
	size_t nwins = 0;
	for (size_t i = 0; i < env->checkin->n_inventory && nwins < MAX_WINDOWS; i++) {
		const Fleetgate__CertInfo *ci = env->checkin->inventory[i];
		int64_t ws = 0, we = 0;
		if (ci == NULL || ci->serial_hex == NULL || ci->serial_hex[0] == '\0')
			continue;
		int wr = store_cert_window(w->st, dev.id, ci->serial_hex, &ws, &we, err, sizeof err);
		if (wr < 0)
			fg_err("checkin", rid, "device %s: %s", dev.id, err);
		if (wr != 1 || ws <= 0)
			continue;
		fleetgate__renewal_window__init(&wins[nwins]);
		wins[nwins].slot = ci->slot;
		wins[nwins].serial_hex = ci->serial_hex;
		wins[nwins].start = ws;
		wins[nwins].end = we;
		winp[nwins] = &wins[nwins];
		nwins++;
	}
	cr.n_renewal_windows = nwins;
	cr.renewal_windows = winp;
	cr.status = FLEETGATE__STATUS__STATUS_OK;
	cr.message = (char *)"ok";
	cr.next_checkin = (uint32_t)w->cfg->checkin_interval;
	cr.device_id = dev.id;
	cr.n_commands = cb.n;
	cr.commands = cmdp;
	pack_env(&renv, rid, out, len);
	for (size_t i = 0; i < nlists; i++)
		fg_cert_list_clear(&anchors[i]);
out:
	free(fj);
	store_device_clear(&dev);
}

/* The stats result of an enrollment or renewal reply frame (decoded again:
 * it is produced in many places, and this is the one place all pass). */
static enum stats_result reply_result(const uint8_t *reply, size_t len)
{
	enum stats_result r = STATS_ERROR;
	Fleetgate__Envelope *env = reply ? fg_wire_unpack(reply, len, SIZE_MAX, NULL, 0) : NULL;
	Fleetgate__Status st = FLEETGATE__STATUS__STATUS_INTERNAL;

	if (env != NULL && env->body_case == FLEETGATE__ENVELOPE__BODY_CERT_REPLY)
		st = env->cert_reply->status;
	else if (env != NULL && env->body_case == FLEETGATE__ENVELOPE__BODY_ERROR)
		st = env->error->status;
	switch (st) {
	case FLEETGATE__STATUS__STATUS_OK: r = STATS_OK; break;
	case FLEETGATE__STATUS__STATUS_DENIED: r = STATS_DENIED; break;
	/* RESUBMIT: the request goes on with a rebuilt CSR, like a pending one */
	case FLEETGATE__STATUS__STATUS_PENDING:
	case FLEETGATE__STATUS__STATUS_RESUBMIT: r = STATS_PENDING; break;
	case FLEETGATE__STATUS__STATUS_BAD_REQUEST: r = STATS_BAD_REQUEST; break;
	case FLEETGATE__STATUS__STATUS_UNAUTHORIZED: r = STATS_UNAUTHORIZED; break;
	default: r = STATS_ERROR; break;
	}
	fg_wire_free(env);
	return r;
}

/* handle_cert, counted for /metrics: backend, result and time to answer. */
void worker_enroll(struct worker *w, const struct enroll_req *r, uint8_t **reply,
		   size_t *reply_len)
{
	uint64_t t0 = fg_mono_ns();

	*reply = NULL;
	*reply_len = 0;
	w->stats_backend[0] = '\0';
	handle_cert(w, r, reply, reply_len);
	stats_enroll(w->stats_backend, reply_result(*reply, *reply_len),
		     (double)(fg_mono_ns() - t0) / 1e9);
}

void worker_handle(struct worker *w, const char *curve_key, const uint8_t *req, size_t len,
		   uint8_t **reply, size_t *reply_len)
{
	char err[512] = "";
	*reply = NULL;
	*reply_len = 0;

	if (curve_key == NULL || strlen(curve_key) != 40)
		return;     /* no authenticated identity: drop */
	Fleetgate__Envelope *env = fg_wire_unpack(req, len, w->cfg->max_message, err, sizeof err);
	if (env == NULL) {
		/* The request id is unknown: answer under a fixed one. */
		reply_error("unknown-request", FLEETGATE__STATUS__STATUS_BAD_REQUEST, reply, reply_len,
			    "undecodable request: %s", err);
		return;
	}
	switch (env->body_case) {
	case FLEETGATE__ENVELOPE__BODY_ENROLL: {
		const Fleetgate__EnrollRequest *er = env->enroll;
		struct enroll_req r = {
			.protocol = "zmq", .key = curve_key, .request_id = env->request_id,
			.slot = er->slot, .csr = er->csr_der.data, .csr_len = er->csr_der.len,
			.token = er->token, .facts = er->facts,
			.challenges_ready = er->challenges_ready, .n_challenges_ready = er->n_challenges_ready,
		};
		worker_enroll(w, &r, reply, reply_len);
		break;
	}
	case FLEETGATE__ENVELOPE__BODY_RENEW: {
		const Fleetgate__RenewRequest *rr = env->renew;
		struct enroll_req r = {
			.protocol = "zmq", .key = curve_key, .request_id = env->request_id,
			.renew = 1, .slot = rr->slot, .csr = rr->csr_der.data,
			.csr_len = rr->csr_der.len, .facts = rr->facts,
			.cur_cert = rr->current_cert_der.data, .cur_cert_len = rr->current_cert_der.len,
			.pop = rr->pop_signature.data, .pop_len = rr->pop_signature.len,
			.challenges_ready = rr->challenges_ready, .n_challenges_ready = rr->n_challenges_ready,
		};
		worker_enroll(w, &r, reply, reply_len);
		break;
	}
	case FLEETGATE__ENVELOPE__BODY_CHECKIN:
		handle_checkin(w, curve_key, env, reply, reply_len);
		stats_checkin();
		break;
	default:
		reply_error(env->request_id, FLEETGATE__STATUS__STATUS_BAD_REQUEST, reply, reply_len,
			    "message type %d is not a request this gateway serves", (int)env->body_case);
		break;
	}
	fg_wire_free(env);
}
