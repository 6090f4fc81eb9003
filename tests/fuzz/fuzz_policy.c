/*
 * fuzz_policy: the input as a policy (policy_new_text: a Lua chunk in the
 * sandbox), its enroll(req) run on a fixed request and the returned value
 * taken as a decision. The caps are the sandbox's own, set lower than the
 * gateway's defaults (4 MiB, 1,000,000 instructions): 1 MiB and 20,000
 * instructions reach the same limit checks, and a looping input then costs
 * a fortieth of the time, so the fuzzer spends it on new inputs.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fg_log.h"
#include "policy.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fg_log_init("fuzz_policy", FG_LOG_ERROR, FG_LOG_TEXT);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const dns[] = { "dev1.example", "dev1.local" };
	struct policy_limits lim = { 1024u * 1024, 20000 };
	char err[1024];
	struct policy *p = policy_new_text("fuzz.lua", (const char *)data, size, &lim, err, sizeof err);
	if (p == NULL)
		return 0;
	struct policy_request req = {
		.protocol = "zmq", .request_id = "fuzz-req", .slot = "default", .new_device = 1,
		.device_id = "dev_fuzz", .device_group = "default", .device_hostname = "dev1",
		.token_group = "default", .csr_cn = "dev1", .csr_dns = dns, .csr_ndns = 2,
		.csr_key_type = "ec", .csr_curve = "P-256", .csr_key_bits = 256,
		.device_attrs_json = "{\"site\":\"lab\"}", .token_bound_json = "{\"os_id\":\"debian\"}",
	};
	req.facts.secure_boot = -1;
	req.facts.hostname = "dev1";
	req.facts.os_id = "debian";
	struct policy_decision d;
	memset(&d, 0, sizeof d);
	if (policy_enroll(p, &req, &d, err, sizeof err) == 0)
		policy_decision_clear(&d);
	policy_free(p);
	return 0;
}
