/*
 * slot.c: per-slot state, requests and atomic installs (see slot.h).
 */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fg_log.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"
#include "slot.h"

extern char **environ;

#define STATE_PATH_MAX (PATH_MAX + 96)
#define INSTALLED_MAX (1024 * 1024)

static void state_path(const struct agent_config *cfg, const struct agent_slot *s,
		       const char *suffix, char *out, size_t n)
{
	snprintf(out, n, "%s/%s%s", cfg->state_dir, s->name, suffix);
}

/* The first certificate of a PEM file (the leaf), or NULL. */
static X509 *first_cert_of(const char *path)
{
	char *pem = NULL;
	size_t len = 0;
	X509 *x = NULL;
	if (fg_read_file(path, INSTALLED_MAX, &pem, &len, NULL, 0) != 0)
		return NULL;
	STACK_OF(X509) *sk = fg_certs_from_pem(pem, len, NULL, 0);
	if (sk != NULL) {
		x = sk_X509_shift(sk);
		sk_X509_pop_free(sk, X509_free);
	}
	free(pem);
	return x;
}

int slot_installed(const struct agent_slot *s, X509 **cert, EVP_PKEY **key)
{
	X509 *c = first_cert_of(s->cert);
	EVP_PKEY *k = c ? fg_key_load(s->key, NULL, 0) : NULL;
	if (c == NULL || k == NULL || !fg_cert_matches_key(c, k)) {
		X509_free(c);
		EVP_PKEY_free(k);
		return 0;
	}
	if (cert)
		*cert = c;
	else
		X509_free(c);
	if (key)
		*key = k;
	else
		EVP_PKEY_free(k);
	return 1;
}

int64_t slot_renew_due(const struct agent_slot *s, X509 *cert)
{
	struct fg_cert_info ci;
	char h[65];
	uint32_t r = 0;

	if (fg_cert_info(cert, &ci, NULL, 0) != 0)
		return 0;
	int64_t life = ci.not_after - ci.not_before;
	if (life <= 0)
		return ci.not_after;
	/* Jitter from the serial: stable for this certificate, spread across
	 * the fleet, so that a mass enrollment does not renew all at once. */
	fg_sha256_hex(ci.serial_hex, strlen(ci.serial_hex), h);
	for (int i = 0; i < 8; i++)
		r = r << 4 | (uint32_t)(h[i] <= '9' ? h[i] - '0' : h[i] - 'a' + 10);
	int64_t jitter = (int64_t)((double)life * 0.05 * ((double)r / 4294967296.0));
	int64_t due = ci.not_before + (int64_t)((double)life * s->renew_at) - jitter;
	int64_t margin = life / 10 < 3600 ? life / 10 : 3600;
	if (due > ci.not_after - margin)
		due = ci.not_after - margin;
	return due;
}

/* The CA's suggested renewal time (ARI, RFC 9773) or the gateway's renewal
 * window kept for the installed certificate: "<slot>.renew_after" holds
 * "SERIAL START [END]", written by slot_install from CertReply.renew_after
 * and renew_before, and by slot_window_update from a check-in answer. It
 * replaces the computed due time when it names this certificate's serial
 * and falls within its life (its very start means "renew now": a window in
 * the past). With END, the due time is a moment inside [START, END) drawn
 * from the serial (stable for this certificate, spread across the fleet).
 * Never later than the safety margin before expiry that the own schedule
 * keeps. Returns due unchanged otherwise. */
static int64_t ari_due(const struct agent_config *cfg, const struct agent_slot *s,
		       const struct fg_cert_info *ci, int64_t due)
{
	char p[STATE_PATH_MAX], serial[80] = "", buf[160], h[65];
	long long when = 0, until = 0;
	FILE *f;
	state_path(cfg, s, ".renew_after", p, sizeof p);
	if ((f = fopen(p, "r")) == NULL)
		return due;
	int ok = fgets(buf, sizeof buf, f) != NULL && sscanf(buf, "%79s %lld %lld", serial, &when, &until) >= 2;
	fclose(f);
	if (!ok || strcmp(serial, ci->serial_hex) != 0 || when < ci->not_before || when >= ci->not_after)
		return due;
	if (until > when) {
		uint32_t r = 0;
		fg_sha256_hex(ci->serial_hex, strlen(ci->serial_hex), h);
		for (int i = 8; i < 16; i++)
			r = r << 4 | (uint32_t)(h[i] <= '9' ? h[i] - '0' : h[i] - 'a' + 10);
		when += (long long)((double)(until - when) * ((double)r / 4294967296.0));
	}
	int64_t life = ci->not_after - ci->not_before;
	int64_t margin = life / 10 < 3600 ? life / 10 : 3600;
	return when < ci->not_after - margin ? (int64_t)when : ci->not_after - margin;
}

enum slot_action slot_decide(const struct agent_config *cfg, const struct agent_slot *s,
			     int64_t now, int force, int64_t *due, int64_t *not_after)
{
	X509 *c = NULL;
	struct fg_cert_info ci;
	enum slot_action a;

	if (due)
		*due = 0;
	if (not_after)
		*not_after = 0;
	if (slot_has_pending(cfg, s))
		return SLOT_RESUME;
	if (!slot_installed(s, &c, NULL))
		return SLOT_ENROLL;
	if (fg_cert_info(c, &ci, NULL, 0) != 0) {
		X509_free(c);
		return SLOT_ENROLL;
	}
	int64_t d = ari_due(cfg, s, &ci, slot_renew_due(s, c));
	X509_free(c);
	if (due)
		*due = d;
	if (not_after)
		*not_after = ci.not_after;
	/* An expired certificate cannot prove anything: enroll again (the
	 * agent's CURVE key is bound to its device, so no token is needed). */
	if (now >= ci.not_after)
		a = SLOT_ENROLL;
	else if (force || now >= d)
		a = SLOT_RENEW;
	else
		a = SLOT_VALID;
	return a;
}

int slot_has_pending(const struct agent_config *cfg, const struct agent_slot *s)
{
	char p[STATE_PATH_MAX];
	state_path(cfg, s, ".pending", p, sizeof p);
	return access(p, F_OK) == 0;
}

void slot_request_clear(struct slot_request *r)
{
	EVP_PKEY_free(r->key);
	free(r->buf);
	memset(r, 0, sizeof *r);
}

/* See slot.h: the packed envelope is decoded, given the tokens and packed
 * again, so that the CSR (perhaps rebuilt from a template) stays as sent. */
int slot_request_set_ready(struct slot_request *r, char *const *tokens, size_t n)
{
	Fleetgate__Envelope *env = fleetgate__envelope__unpack(NULL, r->len, r->buf);
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc = -1;

	if (env == NULL)
		return -1;
	size_t *np = NULL;
	char ***vp = NULL;
	if (env->body_case == FLEETGATE__ENVELOPE__BODY_ENROLL && env->enroll != NULL) {
		np = &env->enroll->n_challenges_ready;
		vp = &env->enroll->challenges_ready;
	} else if (env->body_case == FLEETGATE__ENVELOPE__BODY_RENEW && env->renew != NULL) {
		np = &env->renew->n_challenges_ready;
		vp = &env->renew->challenges_ready;
	}
	if (np == NULL)
		goto out;
	/* swap in the caller's tokens for packing, then put the decoder's
	 * own back so that free_unpacked frees only what it made */
	size_t old_n = *np;
	char **old_v = *vp;
	*np = n;
	*vp = (char **)tokens;
	rc = fg_wire_pack(env, &buf, &len);
	*np = old_n;
	*vp = old_v;
	if (rc == 0) {
		free(r->buf);
		r->buf = buf;
		r->len = len;
	}
out:
	fleetgate__envelope__free_unpacked(env, NULL);
	return rc;
}

void slot_request_forget(const struct agent_config *cfg, const struct agent_slot *s)
{
	char p[STATE_PATH_MAX];
	state_path(cfg, s, ".pending", p, sizeof p);
	unlink(p);
	state_path(cfg, s, ".key.new", p, sizeof p);
	unlink(p);
}

/* Resume the request in flight from the pending files: 1 when r now holds
 * its request id, kind and key, 0 when there is none (or it is unusable). */
static int request_resume(const struct agent_config *cfg, const struct agent_slot *s,
			  struct slot_request *r)
{
	char pend[STATE_PATH_MAX], keynew[STATE_PATH_MAX], *text = NULL, kind[16] = "";
	char rid[65] = "";

	state_path(cfg, s, ".pending", pend, sizeof pend);
	state_path(cfg, s, ".key.new", keynew, sizeof keynew);
	if (fg_read_file(pend, 4096, &text, NULL, NULL, 0) != 0)
		return 0;
	int ok = sscanf(text, "%64s %15s", rid, kind) == 2 && fg_request_id_valid(rid) &&
		 (strcmp(kind, "enroll") == 0 || strcmp(kind, "renew") == 0);
	free(text);
	if (!ok) {
		fg_warn("agent", NULL, "slot %s: %s is unreadable; starting a new request", s->name, pend);
		return 0;
	}
	if ((r->key = fg_key_load(keynew, NULL, 0)) == NULL) {
		fg_warn("agent", rid, "slot %s: the key of the request in flight (%s) is missing; starting a new request",
			s->name, keynew);
		return 0;
	}
	fg_strlcpy(r->rid, rid, sizeof r->rid);
	r->renew = strcmp(kind, "renew") == 0;
	fg_info("agent", r->rid, "slot %s: resuming the %s request in flight", s->name, kind);
	return 1;
}

/* The pair a renewal proves possession of: the installed one, or, when an
 * install was cut short after the key was replaced, the .prev copies. */
static int current_pair(const struct agent_slot *s, X509 **cert, EVP_PKEY **key)
{
	char kp[PATH_MAX + 8], cp[PATH_MAX + 8];
	if (slot_installed(s, cert, key))
		return 1;
	snprintf(kp, sizeof kp, "%s.prev", s->key);
	snprintf(cp, sizeof cp, "%s.prev", s->cert);
	EVP_PKEY *k = fg_key_load(kp, NULL, 0);
	X509 *c = k ? first_cert_of(s->cert) : NULL;
	if (c && !fg_cert_matches_key(c, k)) {
		X509_free(c);
		c = first_cert_of(cp);
	}
	if (c == NULL || !fg_cert_matches_key(c, k)) {
		X509_free(c);
		EVP_PKEY_free(k);
		return 0;
	}
	*cert = c;
	*key = k;
	return 1;
}

static int request_pack(const struct agent_config *cfg, const struct agent_slot *s,
			const struct fg_bundle *b, const struct agent_facts *f,
			struct slot_request *r, const struct fg_csr_names *nm, char *err, size_t errlen);

/*
 * A fresh request writes the new key and the pending record durably before
 * anything can be sent, so whatever happens next (timeout, crash, PENDING)
 * the same request id and key are used again. The CSR is rebuilt on each
 * attempt: its signature may differ, but the gateway answers a request id
 * it has seen with the stored result.
 */
int slot_request_build(const struct agent_config *cfg, const struct agent_slot *s, int renew,
		       const struct fg_bundle *b, const struct agent_facts *f,
		       struct slot_request *r, char *err, size_t errlen)
{
	char pend[STATE_PATH_MAX], keynew[STATE_PATH_MAX];
	int rc = -1;

	memset(r, 0, sizeof *r);
	state_path(cfg, s, ".pending", pend, sizeof pend);
	state_path(cfg, s, ".key.new", keynew, sizeof keynew);
	if (!request_resume(cfg, s, r)) {
		char line[128];
		r->renew = renew && slot_installed(s, NULL, NULL);
		if (fg_request_id_new(r->rid) != 0) {
			fg_seterr(err, errlen, "slot %s: cannot make a request id (no randomness)", s->name);
			goto out;
		}
		if ((r->key = fg_key_generate((enum fg_key_type)s->key_type, err, errlen)) == NULL ||
		    fg_key_save(keynew, r->key, 0600, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
			goto out;
		int n = snprintf(line, sizeof line, "%s %s\n", r->rid, r->renew ? "renew" : "enroll");
		if (fg_write_file_atomic(pend, line, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
			goto out;
	}
	const char *dns[1] = { f->hostname };
	struct fg_csr_names nm = { .cn = f->hostname, .dns = dns, .ndns = f->hostname[0] ? 1 : 0 };
	rc = request_pack(cfg, s, b, f, r, &nm, err, errlen);
out:
	if (rc != 0)
		slot_request_clear(r);
	return rc;
}

/* The CSR for r's key with nm's names, and the envelope around it (a
 * renewal with its proof of possession) into r->buf. 0, or -1 with err. */
static int request_pack(const struct agent_config *cfg, const struct agent_slot *s,
			const struct fg_bundle *b, const struct agent_facts *f,
			struct slot_request *r, const struct fg_csr_names *nm, char *err, size_t errlen)
{
	unsigned char *csr = NULL, *cur_der = NULL, *sig = NULL;
	size_t csr_len = 0, cur_len = 0, sig_len = 0;
	X509 *cur = NULL;
	EVP_PKEY *cur_key = NULL;
	int rc = -1;

	free(r->buf);
	r->buf = NULL;
	r->len = 0;
	if (fg_csr_build_names(r->key, nm, &csr, &csr_len, err, errlen) != 0)
		goto out;

	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__EnrollRequest er = FLEETGATE__ENROLL_REQUEST__INIT;
	Fleetgate__RenewRequest rr = FLEETGATE__RENEW_REQUEST__INIT;
	Fleetgate__Facts pf = FLEETGATE__FACTS__INIT;
	facts_to_proto(f, &pf);
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = r->rid;
	if (r->renew) {
		if (!current_pair(s, &cur, &cur_key)) {
			fg_seterr(err, errlen, "slot %s: the certificate to renew is gone; the next run enrolls",
				  s->name);
			slot_request_forget(cfg, s);
			goto out;
		}
		if (fg_cert_to_der(cur, &cur_der, &cur_len) != 0) {
			fg_seterr(err, errlen, "slot %s: cannot encode the installed certificate", s->name);
			goto out;
		}
		/* proof of possession: the CURRENT installed key signs */
		if (fg_pop_sign(cur_key, r->rid, csr, csr_len, &sig, &sig_len, err, errlen) != 0)
			goto out;
		rr.slot = (char *)s->name;
		rr.csr_der = (ProtobufCBinaryData){ csr_len, csr };
		rr.current_cert_der = (ProtobufCBinaryData){ cur_len, cur_der };
		rr.pop_signature = (ProtobufCBinaryData){ sig_len, sig };
		rr.facts = &pf;
		env.body_case = FLEETGATE__ENVELOPE__BODY_RENEW;
		env.renew = &rr;
	} else {
		er.slot = (char *)s->name;
		er.csr_der = (ProtobufCBinaryData){ csr_len, csr };
		er.token = (char *)b->token;
		er.facts = &pf;
		env.body_case = FLEETGATE__ENVELOPE__BODY_ENROLL;
		env.enroll = &er;
	}
	if (fg_wire_pack(&env, &r->buf, &r->len) != 0) {
		fg_seterr(err, errlen, "slot %s: cannot encode the request", s->name);
		goto out;
	}
	rc = 0;
out:
	free(csr);
	free(cur_der);
	free(sig);
	X509_free(cur);
	EVP_PKEY_free(cur_key);
	return rc;
}

/* See slot.h. CMS_decrypt with no certificate tries every recipient with
 * the key, so the gateway's recipient identifier does not matter. The
 * clear PKCS#8 exists only in memory and is wiped. */
int slot_request_take_server_key(struct slot_request *r, const Fleetgate__CertReply *cr, char *err,
				 size_t errlen)
{
	const unsigned char *q = cr->encrypted_key.data;
	CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &q, (long)cr->encrypted_key.len);
	BIO *out = BIO_new(BIO_s_mem());
	EVP_PKEY *k = NULL;
	int rc = -1;

	if (cms == NULL || out == NULL || CMS_decrypt(cms, r->key, NULL, NULL, out, 0) != 1) {
		unsigned long e = ERR_peek_last_error();
		char buf[256] = "";
		if (e)
			ERR_error_string_n(e, buf, sizeof buf);
		fg_seterr(err, errlen, "the server-generated key cannot be decrypted with this request's key (%s); it is not installed",
			  buf[0] ? buf : "not a CMS EnvelopedData");
		goto out;
	}
	char *p = NULL;
	long n = BIO_get_mem_data(out, &p);
	const unsigned char *pq = (const unsigned char *)p;
	k = n > 0 ? d2i_AutoPrivateKey(NULL, &pq, n) : NULL;
	if (n > 0)
		OPENSSL_cleanse(p, (size_t)n);
	if (k == NULL) {
		fg_seterr(err, errlen, "the server-generated key is not a PKCS#8 private key; it is not installed");
		goto out;
	}
	EVP_PKEY_free(r->key);
	r->key = k;
	rc = 0;
out:
	ERR_clear_error();
	BIO_free(out);
	CMS_ContentInfo_free(cms);
	return rc;
}

/* Is k a key of type t? */
static int key_is_type(EVP_PKEY *k, enum fg_key_type t)
{
	char group[64] = "";
	size_t gl = 0;
	switch (t) {
	case FG_KEY_P256:
	case FG_KEY_P384:
		if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
		    EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof group, &gl) != 1)
			return 0;
		return strcmp(group, t == FG_KEY_P256 ? "prime256v1" : "secp384r1") == 0;
	case FG_KEY_RSA2048:
	case FG_KEY_RSA3072:
	case FG_KEY_RSA4096:
		return EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA &&
		       EVP_PKEY_get_bits(k) == (t == FG_KEY_RSA2048 ? 2048 : t == FG_KEY_RSA3072 ? 3072 : 4096);
	case FG_KEY_ED25519:
		return EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519;
	default:
		return 0;
	}
}

int slot_request_resubmit(const struct agent_config *cfg, const struct agent_slot *s,
			  const struct fg_bundle *b, const struct agent_facts *f,
			  struct slot_request *r, const Fleetgate__CsrTemplate *tpl, char *err,
			  size_t errlen)
{
	/* The CA takes keys of another type only (EST csrattrs): a new key of
	 * that type replaces the one in flight, durably before it is used,
	 * under the same request id (nothing was admitted for the old one). */
	if (tpl->key_type != NULL && tpl->key_type[0] != '\0') {
		int t = fg_key_type_parse(tpl->key_type);
		char keynew[STATE_PATH_MAX];
		if (t < 0) {
			fg_seterr(err, errlen, "slot %s: the gateway asks for key type '%s', which this agent cannot make; update the agent",
				  s->name, tpl->key_type);
			return -1;
		}
		if (!key_is_type(r->key, (enum fg_key_type)t)) {
			EVP_PKEY *k = fg_key_generate((enum fg_key_type)t, err, errlen);
			state_path(cfg, s, ".key.new", keynew, sizeof keynew);
			if (k == NULL || fg_key_save(keynew, k, 0600, (uid_t)-1, (gid_t)-1, err, errlen) != 0) {
				EVP_PKEY_free(k);
				return -1;
			}
			EVP_PKEY_free(r->key);
			r->key = k;
			fg_debug("agent", r->rid, "slot %s: made a new %s key for this request (slot key_type %s)",
				 s->name, tpl->key_type, fg_key_type_name((enum fg_key_type)s->key_type));
		}
	}
	struct fg_csr_names nm = {
		.cn = tpl->subject_cn,
		.dns = (const char *const *)tpl->dns,
		.ndns = tpl->n_dns,
		.ip = (const char *const *)tpl->ip,
		.nip = tpl->n_ip,
		.email = (const char *const *)tpl->email,
		.nemail = tpl->n_email,
		.challenge = tpl->challenge_password,
	};
	return request_pack(cfg, s, b, f, r, &nm, err, errlen);
}

/* environ plus the FLEETGATE_* variables (replacing any inherited ones);
 * the strings are malloc'd, free with env_free. NULL when out of memory. */
static char **hook_env(const struct agent_slot *s)
{
	const char *names[4] = { "FLEETGATE_SLOT", "FLEETGATE_CERT", "FLEETGATE_KEY", "FLEETGATE_CHAIN" };
	const char *vals[4] = { s->name, s->cert, s->key, s->chain };
	size_t n = 0, j = 0;
	while (environ && environ[n])
		n++;
	char **env = calloc(n + 5, sizeof *env);
	if (env == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "FLEETGATE_", 10) != 0 && (env[j++] = strdup(environ[i])) == NULL)
			goto fail;
	for (int i = 0; i < 4; i++) {
		size_t l = strlen(names[i]) + strlen(vals[i]) + 2;
		if ((env[j] = malloc(l)) == NULL)
			goto fail;
		snprintf(env[j++], l, "%s=%s", names[i], vals[i]);
	}
	return env;
fail:
	for (size_t i = 0; i < j; i++)
		free(env[i]);
	free(env);
	return NULL;
}

static void env_free(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		free(env[i]);
	free(env);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Reap pid, waiting at most ms: 1 reaped (*status set), 0 still running. */
static int reap(pid_t pid, int *status, long ms)
{
	for (long waited = 0;; waited += 10) {
		pid_t w = waitpid(pid, status, WNOHANG);
		if (w == pid || (w < 0 && errno != EINTR))
			return 1;
		if (waited >= ms)
			return 0;
		sleep_ms(10);
	}
}

/*
 * posix_spawn rather than fork+setenv: the agent has ZeroMQ threads, and
 * only async-signal-safe calls are allowed between fork and exec. The hook
 * gets default signal dispositions and an empty mask (the daemon blocks
 * SIGTERM, SIGINT and SIGHUP for its signalfd), and its own process group so
 * that a hung hook and its children can be killed together.
 */
int slot_run_hook(const struct agent_slot *s, int timeout_s, char *err, size_t errlen)
{
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	char **env = NULL;
	pid_t pid;
	int status = 0, rc = -1;

	if (s->reload[0] == '\0')
		return 0;
	if ((env = hook_env(s)) == NULL) {
		fg_seterr(err, errlen, "cannot run the reload command: out of memory");
		return -1;
	}
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGHUP);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGCHLD);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setpgroup(&attr, 0);
	char *argv[] = { "sh", "-c", (char *)s->reload, NULL };
	int e = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, env);
	posix_spawnattr_destroy(&attr);
	if (e != 0) {
		fg_seterr(err, errlen, "cannot run the reload command '%s': %s", s->reload, strerror(e));
		goto out;
	}
	if (!reap(pid, &status, (long)timeout_s * 1000)) {
		kill(-pid, SIGTERM);
		if (!reap(pid, &status, 2000)) {
			kill(-pid, SIGKILL);
			reap(pid, &status, 5000);
		}
		fg_seterr(err, errlen, "reload command '%s' did not finish within %d s and was killed",
			  s->reload, timeout_s);
		goto out;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		rc = 0;
	else if (WIFEXITED(status))
		fg_seterr(err, errlen, "reload command '%s' exited with status %d", s->reload,
			  WEXITSTATUS(status));
	else
		fg_seterr(err, errlen, "reload command '%s' was killed by signal %d", s->reload,
			  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
out:
	env_free(env);
	return rc;
}

/* The previous content of one installed file, kept for rollback. */
struct saved {
	const char *path;       /* "" for an unconfigured chain */
	char *data;
	size_t len;
	int existed;
	mode_t mode;
	uid_t uid;
	gid_t gid;
};

/* Read what is installed at sv->path and keep a copy as <path>.prev (same
 * mode and owner). 0, or -1 with err (then nothing was changed). */
static int save(struct saved *sv, const char *path, char *err, size_t errlen)
{
	struct stat sb;
	char prev[PATH_MAX + 8];

	memset(sv, 0, sizeof *sv);
	sv->path = path;
	sv->uid = (uid_t)-1;
	sv->gid = (gid_t)-1;
	if (path[0] == '\0' || stat(path, &sb) != 0)
		return 0;
	if (fg_read_file(path, INSTALLED_MAX, &sv->data, &sv->len, err, errlen) != 0)
		return -1;
	sv->existed = 1;
	sv->mode = sb.st_mode & 07777;
	if (geteuid() == 0) {
		sv->uid = sb.st_uid;
		sv->gid = sb.st_gid;
	}
	if ((size_t)snprintf(prev, sizeof prev, "%s.prev", path) >= sizeof prev) {
		fg_seterr(err, errlen, "path too long: %s", path);
		return -1;
	}
	if (fg_write_file_atomic(prev, sv->data, sv->len, sv->mode, sv->uid, sv->gid, err, errlen) != 0)
		return -1;
	return 0;
}

/* Put the saved file back (atomically), or remove a file that was not
 * there before. The copy that save() made is renamed into place, which
 * needs no new space: a disk that filled up during the install (the usual
 * reason to roll back) still gets the previous files back. Only without
 * that copy is the saved content written again. */
static void restore(const struct saved *sv, const char *rid)
{
	char err[512], prev[PATH_MAX + 8];
	if (sv->path[0] == '\0')
		return;
	if (sv->existed) {
		snprintf(prev, sizeof prev, "%s.prev", sv->path);
		if (fg_rename_durable(prev, sv->path, err, sizeof err) == 0)
			return;
		if (fg_write_file_atomic(sv->path, sv->data, sv->len, sv->mode, sv->uid, sv->gid, err,
					 sizeof err) != 0)
			fg_err("agent", rid, "rollback of %s failed: %s; the previous version is in %s.prev",
			       sv->path, err, sv->path);
	} else if (unlink(sv->path) != 0 && errno != ENOENT) {
		fg_err("agent", rid, "rollback: cannot remove %s: %s", sv->path, strerror(errno));
	}
}

static void saved_free(struct saved *sv)
{
	if (sv->data) {
		OPENSSL_cleanse(sv->data, sv->len);
		free(sv->data);
	}
	memset(sv, 0, sizeof *sv);
}

/* The reply's chain as X509s and as one PEM text (issuer first). */
static int chain_of(const Fleetgate__CertReply *cr, STACK_OF(X509) *chain, char **pem,
		    size_t *pem_len, char *err, size_t errlen)
{
	*pem = NULL;
	*pem_len = 0;
	for (size_t i = 0; i < cr->n_chain_der; i++) {
		X509 *x = fg_cert_from_der(cr->chain_der[i].data, cr->chain_der[i].len, err, errlen);
		if (x == NULL)
			return -1;
		if (!sk_X509_push(chain, x)) {
			X509_free(x);
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
		char *one = fg_cert_to_pem(x);
		size_t ol = one ? strlen(one) : 0;
		char *n = one ? realloc(*pem, *pem_len + ol + 1) : NULL;
		if (n == NULL) {
			free(one);
			fg_seterr(err, errlen, "out of memory");
			return -1;
		}
		memcpy(n + *pem_len, one, ol + 1);
		*pem = n;
		*pem_len += ol;
		free(one);
	}
	return 0;
}

/* Keeps the CA's suggested renewal time or the gateway's window for the
 * certificate just installed (see ari_due), or removes an older one when
 * there is none. A failure only costs the suggestion: the own schedule
 * applies. */
static int window_keep(const struct agent_config *cfg, const struct agent_slot *s,
		       const char *serial_hex, int64_t start, int64_t end, const char *rid)
{
	char p[STATE_PATH_MAX], line[160], err[256], when[32], until[32];
	state_path(cfg, s, ".renew_after", p, sizeof p);
	if (start <= 0) {
		unlink(p);
		return 0;
	}
	int n = end > start
		? snprintf(line, sizeof line, "%s %lld %lld\n", serial_hex, (long long)start, (long long)end)
		: snprintf(line, sizeof line, "%s %lld\n", serial_hex, (long long)start);
	if (fg_write_file_atomic(p, line, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, sizeof err) != 0) {
		fg_warn("agent", rid, "slot %s: cannot keep the renewal time the gateway gave (%s); the own schedule applies",
			s->name, err);
		return -1;
	}
	if (end > start)
		fg_info("agent", rid, "slot %s: renewal window %s to %s", s->name,
			fg_time_iso(start, when, sizeof when), fg_time_iso(end, until, sizeof until));
	else
		fg_info("agent", rid, "slot %s: the CA suggests renewal at %s", s->name,
			fg_time_iso(start, when, sizeof when));
	return 0;
}

static void ari_keep(const struct agent_config *cfg, const struct agent_slot *s, X509 *leaf,
		     int64_t renew_after, int64_t renew_before, const char *rid)
{
	struct fg_cert_info ci;
	if (renew_after <= 0 || fg_cert_info(leaf, &ci, NULL, 0) != 0) {
		window_keep(cfg, s, "", 0, 0, rid);
		return;
	}
	window_keep(cfg, s, ci.serial_hex, renew_after, renew_before, rid);
}

int slot_window_update(const struct agent_config *cfg, const struct agent_slot *s,
		       const char *serial_hex, int64_t start, int64_t end, const char *rid)
{
	char p[STATE_PATH_MAX], buf[160], serial[80] = "";
	long long a = 0, b = 0;
	X509 *c = NULL;
	struct fg_cert_info ci;
	FILE *f;
	if (start <= 0 || end <= start || !slot_installed(s, &c, NULL))
		return 0;
	int mine = fg_cert_info(c, &ci, NULL, 0) == 0 && strcmp(ci.serial_hex, serial_hex) == 0 &&
		   start >= ci.not_before && start < ci.not_after;
	X509_free(c);
	if (!mine)
		return 0;
	state_path(cfg, s, ".renew_after", p, sizeof p);
	if ((f = fopen(p, "r")) != NULL) {
		int same = fgets(buf, sizeof buf, f) != NULL &&
			   sscanf(buf, "%79s %lld %lld", serial, &a, &b) == 3 &&
			   strcmp(serial, serial_hex) == 0 && a == start && b == end;
		fclose(f);
		if (same)
			return 0;
	}
	return window_keep(cfg, s, serial_hex, start, end, rid) == 0 ? 1 : 0;
}

/* The hook run in this process (slot_hook_fn's shape). */
static int hook_here(void *arg, const struct agent_slot *s, int timeout_s, char *err, size_t errlen)
{
	(void)arg;
	return slot_run_hook(s, timeout_s, err, errlen);
}

int slot_install(const struct agent_config *cfg, const struct agent_slot *s,
		 const struct slot_request *r, const Fleetgate__CertReply *cr,
		 const char *anchors_pem, char *err, size_t errlen)
{
	return slot_install_hooked(cfg, s, r, cr, anchors_pem, NULL, NULL, err, errlen);
}

int slot_install_hooked(const struct agent_config *cfg, const struct agent_slot *s,
			const struct slot_request *r, const Fleetgate__CertReply *cr,
			const char *anchors_pem, slot_hook_fn hook, void *hook_arg, char *err,
			size_t errlen)
{
	X509 *leaf = NULL;
	STACK_OF(X509) *chain = sk_X509_new_null(), *anchors = NULL;
	char *leaf_pem = NULL, *key_pem = NULL, *chain_pem = NULL;
	size_t key_len = 0, chain_len = 0;
	struct saved sv[3];
	char local[512];
	int rc = -1;

	if (err == NULL || errlen == 0) {
		err = local;
		errlen = sizeof local;
	}
	memset(sv, 0, sizeof sv);
	if (hook == NULL)
		hook = hook_here;
	if (chain == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	leaf = fg_cert_from_der(cr->cert_der.data, cr->cert_der.len, err, errlen);
	if (leaf == NULL)
		goto out;
	if (!fg_cert_matches_key(leaf, r->key)) {
		fg_seterr(err, errlen, "the issued certificate does not match this slot's new key; not installed, the current files are unchanged");
		goto out;
	}
	if (chain_of(cr, chain, &chain_pem, &chain_len, err, errlen) != 0)
		goto out;
	anchors = fg_certs_from_pem(anchors_pem, strlen(anchors_pem), err, errlen);
	if (anchors == NULL)
		goto out;
	/* A certificate that starts in this device's future (the gateway's
	 * clock, or this one, is wrong) would be answered again and again for
	 * this request: the request is dropped, and the next attempt is a new
	 * one that a gateway with its clock put right answers usably. */
	if (X509_cmp_time(X509_get0_notBefore(leaf), NULL) > 0) {
		struct fg_cert_info ci;
		char when[32] = "?";
		if (fg_cert_info(leaf, &ci, err, errlen) == 0)
			fg_time_iso(ci.not_before, when, sizeof when);
		fg_seterr(err, errlen,
			  "the issued certificate is not yet valid: it starts at %s, in this device's future (check the gateway's clock and this one); not installed, the current files are unchanged, and the next attempt makes a new request",
			  when);
		slot_request_forget(cfg, s);
		goto out;
	}
	if (fg_cert_verify(leaf, chain, anchors, err, errlen) != 0) {
		char tmp[1200];
		snprintf(tmp, sizeof tmp, "the issued certificate was refused: %s (check the bundle's anchors); not installed, the current files are unchanged",
			 err);
		fg_strlcpy(err, tmp, errlen);
		goto out;
	}
	leaf_pem = fg_cert_to_pem(leaf);
	key_pem = fg_key_to_pem(r->key, &key_len, err, errlen);
	if (leaf_pem == NULL || key_pem == NULL) {
		if (leaf_pem == NULL)
			fg_seterr(err, errlen, "cannot encode the issued certificate");
		goto out;
	}

	/* Keep what is installed now (in memory and as .prev), then replace
	 * file by file: the key first, so that a crash in between leaves a
	 * key/cert mismatch that slot_installed reports as "not installed" and
	 * the pending request (same id, same key) completes the install. */
	for (int i = 0; i < 3; i++)
		if (save(&sv[i], i == 0 ? s->key : i == 1 ? s->cert : s->chain, err, errlen) != 0) {
			char tmp[1200];
			snprintf(tmp, sizeof tmp, "cannot back up the installed files (%s); nothing was changed", err);
			fg_strlcpy(err, tmp, errlen);
			goto out;
		}
	if (fg_write_file_atomic(s->key, key_pem, key_len, s->mode, s->uid, s->gid, err, errlen) != 0 ||
	    fg_write_file_atomic(s->cert, leaf_pem, strlen(leaf_pem), 0644, s->uid, s->gid, err, errlen) != 0 ||
	    (s->chain[0] && fg_write_file_atomic(s->chain, chain_pem ? chain_pem : "", chain_len, 0644,
						 s->uid, s->gid, err, errlen) != 0))
		goto rollback;
	if (hook(hook_arg, s, SLOT_HOOK_TIMEOUT, err, errlen) != 0)
		goto rollback;
	ari_keep(cfg, s, leaf, cr->renew_after, cr->renew_before, r->rid);
	slot_request_forget(cfg, s);
	rc = 0;
	goto out;
rollback:
	for (int i = 0; i < 3; i++)
		restore(&sv[i], r->rid);
	if (sv[1].existed && s->reload[0]) {
		char e2[512];
		if (hook(hook_arg, s, SLOT_HOOK_TIMEOUT, e2, sizeof e2) != 0)
			fg_err("agent", r->rid, "slot %s: reload after rollback failed too: %s", s->name, e2);
	}
	{
		char tmp[1200];
		snprintf(tmp, sizeof tmp, "%s; the previous %s was put back", err,
			 sv[1].existed ? "key and certificate" : "state (no certificate)");
		fg_strlcpy(err, tmp, errlen);
	}
out:
	for (int i = 0; i < 3; i++)
		saved_free(&sv[i]);
	if (key_pem) {
		OPENSSL_cleanse(key_pem, key_len);
		free(key_pem);
	}
	free(leaf_pem);
	free(chain_pem);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(anchors, X509_free);
	return rc;
}
