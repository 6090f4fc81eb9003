/*
 * slot.c: per-slot state, requests and atomic installs (see slot.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "fg_log.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"
#include "slot.h"

static void state_path(const struct agent_config *cfg, const struct agent_slot *s,
		       const char *suffix, char *out, size_t n)
{
	snprintf(out, n, "%s/%s%s", cfg->state_dir, s->name, suffix);
}

static X509 *first_cert_of(const char *path)
{
	char *pem = NULL;
	size_t len = 0;
	X509 *x = NULL;
	if (fg_read_file(path, 1024 * 1024, &pem, &len, NULL, 0) != 0)
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
	if (fg_cert_info(cert, &ci, NULL, 0) != 0)
		return 0;
	int64_t life = ci.not_after - ci.not_before;
	if (life <= 0)
		return 0;
	/* Jitter from the serial: stable for this certificate, spread across the fleet. */
	char h[65];
	fg_sha256_hex(ci.serial_hex, strlen(ci.serial_hex), h);
	unsigned long r = strtoul((char[9]){ h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 0 }, NULL, 16);
	int64_t jitter = (int64_t)((double)life * 0.05 * ((double)r / 4294967296.0));
	int64_t due = ci.not_before + (int64_t)((double)life * s->renew_at) - jitter;
	int64_t margin = life / 10 < 3600 ? life / 10 : 3600;
	if (due > ci.not_after - margin)
		due = ci.not_after - margin;
	return due;
}

int slot_has_pending(const struct agent_config *cfg, const struct agent_slot *s)
{
	char p[4200];
	state_path(cfg, s, ".pending", p, sizeof p);
	return access(p, F_OK) == 0;
}

void slot_request_clear(struct slot_request *r)
{
	EVP_PKEY_free(r->key);
	free(r->buf);
	memset(r, 0, sizeof *r);
}

void slot_request_forget(const struct agent_config *cfg, const struct agent_slot *s)
{
	char p[4200];
	state_path(cfg, s, ".pending", p, sizeof p);
	unlink(p);
	state_path(cfg, s, ".key.new", p, sizeof p);
	unlink(p);
}

int slot_request_build(const struct agent_config *cfg, const struct agent_slot *s, int renew,
		       const struct fg_bundle *b, const struct agent_facts *f,
		       struct slot_request *r, char *err, size_t errlen)
{
	char pend[4200], keynew[4200], *text = NULL;
	unsigned char *csr = NULL, *cur_der = NULL, *sig = NULL;
	size_t csr_len = 0, cur_len = 0, sig_len = 0;
	X509 *cur = NULL;
	EVP_PKEY *cur_key = NULL;
	int rc = -1;

	memset(r, 0, sizeof *r);
	state_path(cfg, s, ".pending", pend, sizeof pend);
	state_path(cfg, s, ".key.new", keynew, sizeof keynew);
	if (fg_read_file(pend, 4096, &text, NULL, NULL, 0) == 0 && access(keynew, R_OK) == 0) {
		char kind[16] = "";
		if (sscanf(text, "%64s %15s", r->rid, kind) == 2 && fg_request_id_valid(r->rid) &&
		    (r->key = fg_key_load(keynew, NULL, 0)) != NULL) {
			r->renew = strcmp(kind, "renew") == 0;
			fg_info("agent", r->rid, "slot %s: resuming the %s request in flight", s->name, kind);
		}
	}
	free(text);
	if (r->key == NULL) {
		/* A fresh request: the key is on disk before anything is sent. */
		char line[128];
		r->renew = renew && slot_installed(s, NULL, NULL);
		if (fg_request_id_new(r->rid) != 0 ||
		    (r->key = fg_key_generate((enum fg_key_type)s->key_type, err, errlen)) == NULL ||
		    fg_key_save(keynew, r->key, 0600, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
			goto out;
		int n = snprintf(line, sizeof line, "%s %s\n", r->rid, r->renew ? "renew" : "enroll");
		if (fg_write_file_atomic(pend, line, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
			goto out;
	}
	const char *dns[1] = { f->hostname };
	if (fg_csr_build(r->key, f->hostname, dns, f->hostname[0] ? 1 : 0, &csr, &csr_len, err, errlen) != 0)
		goto out;

	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__EnrollRequest er = FLEETGATE__ENROLL_REQUEST__INIT;
	Fleetgate__RenewRequest rr = FLEETGATE__RENEW_REQUEST__INIT;
	Fleetgate__Facts pf = FLEETGATE__FACTS__INIT;
	facts_to_proto(f, &pf);
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = r->rid;
	if (r->renew) {
		if (!slot_installed(s, &cur, &cur_key)) {
			fg_seterr(err, errlen, "slot %s: the certificate to renew is gone; run again to enroll",
				  s->name);
			slot_request_forget(cfg, s);
			goto out;
		}
		if (fg_cert_to_der(cur, &cur_der, &cur_len) != 0 ||
		    fg_pop_sign(cur_key, r->rid, csr, csr_len, &sig, &sig_len, err, errlen) != 0)
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
		fg_seterr(err, errlen, "cannot encode the request");
		goto out;
	}
	rc = 0;
out:
	free(csr);
	free(cur_der);
	free(sig);
	X509_free(cur);
	EVP_PKEY_free(cur_key);
	if (rc != 0) {
		EVP_PKEY_free(r->key);
		r->key = NULL;
	}
	return rc;
}

int slot_run_hook(const struct agent_slot *s, char *err, size_t errlen)
{
	if (s->reload[0] == '\0')
		return 0;
	pid_t pid = fork();
	if (pid < 0) {
		fg_seterr(err, errlen, "cannot run the reload command: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		setenv("FLEETGATE_SLOT", s->name, 1);
		setenv("FLEETGATE_CERT", s->cert, 1);
		setenv("FLEETGATE_KEY", s->key, 1);
		setenv("FLEETGATE_CHAIN", s->chain, 1);
		execl("/bin/sh", "sh", "-c", s->reload, (char *)NULL);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			fg_seterr(err, errlen, "cannot wait for the reload command: %s", strerror(errno));
			return -1;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		fg_seterr(err, errlen, "reload command '%s' exited with status %d", s->reload, WEXITSTATUS(status));
	else
		fg_seterr(err, errlen, "reload command '%s' was killed by signal %d", s->reload,
			  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* The previous content of one installed file, kept in memory for rollback. */
struct saved {
	const char *path;
	char *data;
	size_t len;
	int existed;
	mode_t mode;
};

static void save(struct saved *sv, const char *path)
{
	struct stat sb;
	memset(sv, 0, sizeof *sv);
	sv->path = path;
	if (path[0] && stat(path, &sb) == 0 &&
	    fg_read_file(path, 1024 * 1024, &sv->data, &sv->len, NULL, 0) == 0) {
		sv->existed = 1;
		sv->mode = sb.st_mode & 07777;
	}
}

static void restore(struct saved *sv, uid_t uid, gid_t gid)
{
	char err[256];
	if (sv->path[0] == '\0')
		return;
	if (sv->existed) {
		if (fg_write_file_atomic(sv->path, sv->data, sv->len, sv->mode, uid, gid, err, sizeof err) != 0)
			fg_err("agent", NULL, "rollback of %s failed: %s", sv->path, err);
	} else {
		unlink(sv->path);
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

int slot_install(const struct agent_config *cfg, const struct agent_slot *s,
		 const struct slot_request *r, const Fleetgate__CertReply *cr,
		 const char *anchors_pem, char *err, size_t errlen)
{
	X509 *leaf = NULL;
	STACK_OF(X509) *chain = sk_X509_new_null(), *anchors = NULL;
	char *leaf_pem = NULL, *key_pem = NULL, *chain_pem = NULL;
	size_t key_len = 0, chain_len = 0;
	struct saved sv[3];
	int rc = -1, written = 0;

	memset(sv, 0, sizeof sv);
	leaf = fg_cert_from_der(cr->cert_der.data, cr->cert_der.len, err, errlen);
	if (leaf == NULL || chain == NULL)
		goto out;
	if (!fg_cert_matches_key(leaf, r->key)) {
		fg_seterr(err, errlen, "the issued certificate does not match this slot's new key; not installed");
		goto out;
	}
	for (size_t i = 0; i < cr->n_chain_der; i++) {
		X509 *x = fg_cert_from_der(cr->chain_der[i].data, cr->chain_der[i].len, err, errlen);
		if (x == NULL)
			goto out;
		sk_X509_push(chain, x);
	}
	anchors = fg_certs_from_pem(anchors_pem, strlen(anchors_pem), err, errlen);
	if (anchors == NULL)
		goto out;
	if (fg_cert_verify(leaf, chain, anchors, err, errlen) != 0)
		goto out;

	leaf_pem = fg_cert_to_pem(leaf);
	key_pem = fg_key_to_pem(r->key, &key_len, err, errlen);
	if (leaf_pem == NULL || key_pem == NULL)
		goto out;
	for (int i = 0; i < sk_X509_num(chain); i++) {
		char *one = fg_cert_to_pem(sk_X509_value(chain, i));
		if (one == NULL)
			goto out;
		size_t ol = strlen(one);
		char *n = realloc(chain_pem, chain_len + ol + 1);
		if (n == NULL) {
			free(one);
			goto out;
		}
		memcpy(n + chain_len, one, ol + 1);
		chain_pem = n;
		chain_len += ol;
		free(one);
	}

	/* Keep what is installed now, then replace file by file. */
	save(&sv[0], s->key);
	save(&sv[1], s->cert);
	save(&sv[2], s->chain);
	written = 1;
	if (fg_write_file_atomic(s->key, key_pem, key_len, s->mode, s->uid, s->gid, err, errlen) != 0 ||
	    fg_write_file_atomic(s->cert, leaf_pem, strlen(leaf_pem), 0644, s->uid, s->gid, err, errlen) != 0 ||
	    (s->chain[0] && fg_write_file_atomic(s->chain, chain_pem ? chain_pem : "", chain_len, 0644,
						 s->uid, s->gid, err, errlen) != 0))
		goto rollback;
	if (slot_run_hook(s, err, errlen) != 0)
		goto rollback;
	slot_request_forget(cfg, s);
	rc = 0;
	goto out;
rollback:
	for (int i = 0; i < 3; i++)
		restore(&sv[i], s->uid, s->gid);
	if (sv[1].existed && s->reload[0]) {
		char e2[256];
		if (slot_run_hook(s, e2, sizeof e2) != 0)
			fg_err("agent", r->rid, "slot %s: reload after rollback failed too: %s", s->name, e2);
	}
	{
		char tmp[600];
		snprintf(tmp, sizeof tmp, "%s; the previous %s was put back", err,
			 sv[1].existed ? "key and certificate" : "state (no certificate)");
		fg_strlcpy(err, tmp, errlen);
	}
out:
	if (written)
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
