/*
 * fuzz_msg: what the gateway checks of each decoded request after the
 * envelope: the token's form, the slot name, the
 * CSR, for a renewal the certificate being renewed and the proof of
 * possession, the facts (JSON for the store, the policy's view, a token's
 * bindings), then the default policy's decision on the request and its
 * clamping to the profile of the default config; for a check-in, the facts
 * and the command results. enroll.c is compiled in (its checks are static)
 * with no store and no backends: only the stateless steps run.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../gateway/enroll.c"
#include "fuzz_state.h"

extern const char fg_default_policy[];
extern const size_t fg_default_policy_len;

static struct gw_config *cfg;
static struct worker fw;

/* A token bound to facts, as `fleetgate token create --bind` stores it. */
static const char bound_json[] = "{\"os_id\":\"debian\",\"arch\":\"x86_64\"}";

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/fg-fuzz-msg.XXXXXX", err[1024];
	fg_log_init("fuzz_msg", FG_LOG_ERROR, FG_LOG_TEXT);
	fuzz_state_make(dir, "tcp://127.0.0.1:7700", NULL, NULL);
	cfg = config_load(dir, err, sizeof err);
	fuzz_state_remove(dir, NULL);
	if (cfg == NULL) {
		fprintf(stderr, "fuzz_msg: %s\n", err);
		abort();
	}
	fw.cfg = cfg;
	return 0;
}

/*
 * A fresh Lua state per decision: a state kept across inputs frees its
 * garbage in later inputs, which makes libFuzzer suspect a leak on every
 * input and run LeakSanitizer each time (600 instead of 5,000 inputs/s).
 */
static struct policy *policy_open(void)
{
	char err[1024];
	struct policy_limits lim = { cfg->policy_memory, cfg->policy_instructions };
	struct policy *p = policy_new_text("default.lua", fg_default_policy, fg_default_policy_len, &lim,
					   err, sizeof err);
	if (p == NULL) {
		fprintf(stderr, "fuzz_msg: %s\n", err);
		abort();
	}
	return p;
}

static void check_cert(const struct enroll_req *r, const char *rid, const struct fg_csr_info *ci,
		       const char *token_group)
{
	char err[1024], hash[65] = "", devid[40] = "dev_00000000";
	struct policy_facts pf;

	if (r->token != NULL && *r->token && fg_token_wellformed(r->token))
		fg_token_hash(r->token, hash);
	fill_policy_facts(&pf, r->facts);
	binding_check(bound_json, &pf, err, sizeof err);
	char *fj = facts_json(r->facts);
	free(fj);
	if (r->renew) {
		struct fg_cert_info info;
		X509 *cur = fg_cert_from_der(r->cur_cert, r->cur_cert_len, err, sizeof err);
		if (cur != NULL && fg_cert_info(cur, &info, err, sizeof err) == 0)
			fg_pop_verify(cur, rid, r->csr, r->csr_len, r->pop, r->pop_len, err, sizeof err);
		X509_free(cur);
	}

	struct policy_request preq = {
		.protocol = r->protocol,
		.request_id = rid,
		.slot = r->slot,
		.renew = r->renew,
		.new_device = !r->renew,
		.device_id = devid,
		.device_group = "default",
		.device_hostname = r->facts ? nz(r->facts->hostname) : NULL,
		.token_group = hash[0] ? token_group : NULL,
		.csr_cn = ci->cn,
		.csr_dns = (const char *const *)ci->dns,
		.csr_ndns = ci->ndns,
		.csr_key_type = ci->key_type,
		.csr_curve = nz(ci->curve),
		.csr_key_bits = ci->key_bits,
		.token_bound_json = hash[0] ? bound_json : NULL,
		.profile = r->profile,
	};
	fill_policy_facts(&preq.facts, r->facts);
	struct policy_decision dec;
	struct params p;
	memset(&dec, 0, sizeof dec);
	memset(&p, 0, sizeof p);
	fw.pol = policy_open();
	if (policy_enroll(fw.pol, &preq, &dec, err, sizeof err) == 0 && dec.allow)
		params_from_decision(&fw, &dec, r->profile, &p, fg_now(), rid, err, sizeof err);
	params_clear(&p);
	policy_decision_clear(&dec);
	policy_free(fw.pol);
	fw.pol = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	Fleetgate__Envelope *env = fg_wire_unpack(data, size, cfg->max_message, err, sizeof err);
	if (env == NULL)
		return 0;
	struct enroll_req r = { .protocol = "zmq", .key = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz",
				.request_id = env->request_id };
	switch (env->body_case) {
	case FLEETGATE__ENVELOPE__BODY_ENROLL:
		r.slot = env->enroll->slot;
		r.csr = env->enroll->csr_der.data;
		r.csr_len = env->enroll->csr_der.len;
		r.token = env->enroll->token;
		r.facts = env->enroll->facts;
		break;
	case FLEETGATE__ENVELOPE__BODY_RENEW:
		r.renew = 1;
		r.slot = env->renew->slot;
		r.csr = env->renew->csr_der.data;
		r.csr_len = env->renew->csr_der.len;
		r.facts = env->renew->facts;
		r.cur_cert = env->renew->current_cert_der.data;
		r.cur_cert_len = env->renew->current_cert_der.len;
		r.pop = env->renew->pop_signature.data;
		r.pop_len = env->renew->pop_signature.len;
		break;
	case FLEETGATE__ENVELOPE__BODY_CHECKIN: {
		char *fj = facts_json(env->checkin->facts);
		free(fj);
		for (size_t i = 0; i < env->checkin->n_results; i++)
			(void)strlen(env->checkin->results[i]->message);
		goto out;
	}
	default:
		goto out;
	}
	struct fg_csr_info ci;
	memset(&ci, 0, sizeof ci);
	if (slot_valid(r.slot) && fg_csr_check(r.csr, r.csr_len, &ci, NULL, err, sizeof err) == 0) {
		check_cert(&r, r.request_id, &ci, "default");
		fg_csr_info_clear(&ci);
	}
out:
	fg_wire_free(env);
	return 0;
}
