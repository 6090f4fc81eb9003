/*
 * fuzz_signer_ipc: the signer as a compromised daemon would talk to it.
 * The input goes through a socketpair into signer_ipc_recv_buf (header
 * checks, buffered reads, body sizes); every message read, to the end of
 * the stream, is answered by build_reply of a signer holding a real CA
 * key: the Request decoded, each item checked (serial form and the
 * write-ahead reservation, a to-be-signed certificate against the
 * profile's ceilings, a CRL, an OCSP answer) and signed when it passes.
 *
 * gateway/signer.c is compiled in. The CA below was made by `fleetgate
 * init` for the seeds only: the seeds are a gateway's own requests to its
 * signer (an algorithm query, a reservation with its certificate, an OCSP
 * answer and a CRL), captured with strace while it enrolled an agent,
 * answered an OCSP query and published a CRL. The signer's clock is
 * pinned to the minute of that capture, so that the seeds' validity
 * and thisUpdate checks pass and mutations reach the signatures. The
 * serial table starts empty for each input.
 */
#define fg_now fuzz_now
#include "../../gateway/signer.c"
#undef fg_now

#include <stddef.h>
#include <stdint.h>

#include <sys/stat.h>

#include "config.h"
#include "fuzz_state.h"

#define CAPTURED_AT 1796627094  /* 2026-12-07T07:04:54Z, when the seeds were made */

int64_t fuzz_now(void)
{
	return CAPTURED_AT;
}

static const char ca_key[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZOoprHR8GwdVbTAs\n"
	"cnj6asSZFQopumzZI6mieY1J+smhRANCAASBdhJYNaW5s2/gtEXaMBjnxKJ4EiGk\n"
	"d+5Lxp/8DChn9HOxLcDBMYMVGmyWxpC6lz+sEEaky+NAm4+D+ZacnG6h\n"
	"-----END PRIVATE KEY-----\n";
static const char ca_crt[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBxTCCAWygAwIBAgIQdwiq5Y+2Qy6p3DoQU57xTDAKBggqhkjOPQQDAjAxMRIw\n"
	"EAYDVQQKDAlmbGVldGdhdGUxGzAZBgNVBAMMEmZsZWV0Z2F0ZSBsb2NhbCBDQTAe\n"
	"Fw0yNjEyMDcwNzAzNTNaFw0zNjEyMDQwNzA0NTNaMDExEjAQBgNVBAoMCWZsZWV0\n"
	"Z2F0ZTEbMBkGA1UEAwwSZmxlZXRnYXRlIGxvY2FsIENBMFkwEwYHKoZIzj0CAQYI\n"
	"KoZIzj0DAQcDQgAEgXYSWDWlubNv4LRF2jAY58SieBIhpHfuS8af/AwoZ/RzsS3A\n"
	"wTGDFRpslsaQupc/rBBGpMvjQJuPg/mWnJxuoaNmMGQwEgYDVR0TAQH/BAgwBgEB\n"
	"/wIBADAOBgNVHQ8BAf8EBAMCAQYwHQYDVR0OBBYEFBJ+T2bdyFWZGe1PWuLwDk1s\n"
	"vSyeMB8GA1UdIwQYMBaAFBJ+T2bdyFWZGe1PWuLwDk1svSyeMAoGCCqGSM49BAMC\n"
	"A0cAMEQCIAn33YE4Cbq4KQfrlyv2C37Y4IomHYh87hv/aFiOG/ZOAiBBdfWkywjt\n"
	"p0GU4+f4FcMYXreDoVhKuuZrKw7Xp1Jaag==\n"
	"-----END CERTIFICATE-----\n";

static struct signer sg;
static struct gw_config *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const files[] = { "ca/", "ca/ca.key", "ca/ca.crt", NULL };
	const char *const texts[] = { NULL, ca_key, ca_crt };
	char dir[] = "/tmp/fg-fuzz-signer.XXXXXX", err[2048];
	(void)argc;
	(void)argv;
	fg_log_init("fuzz_signer_ipc", FG_LOG_ERROR, FG_LOG_TEXT);
	fuzz_state_make(dir, "tcp://127.0.0.1:1", files, texts);
	if ((cfg = config_load(dir, err, sizeof err)) == NULL || (sg.cfg = cfg, load_keys(&sg, err, sizeof err)) != 0) {
		fprintf(stderr, "fuzz_signer_ipc: %s\n", err);
		abort();
	}
	fuzz_state_remove(dir, files);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct signer_rbuf rb;
	int sv[2];
	if (size > 65536 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return 0;
	if (write(sv[0], data, size) != (ssize_t)size) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	close(sv[0]);
	memset(&rb, 0, sizeof rb);
	if (sg.used > 0) {
		memset(sg.serials, 0, sg.cap * sizeof *sg.serials);
		sg.used = 0;
	}
	for (int i = 0; i < 64; i++) {
		struct signer_hdr h;
		unsigned char *body = NULL, *out = NULL;
		size_t len = 0;
		char err[256];
		if (signer_ipc_recv_buf(sv[1], &rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err) != 0)
			break;
		if (h.type != SIGNER_MSG_TEST_FORBIDDEN && build_reply(&sg, &h, body, &out, &len) == 0) {
			Fgsigner__Reply *rep = fgsigner__reply__unpack(NULL, len, out);
			if (rep == NULL)
				abort();        /* the signer packed something it cannot read back */
			fgsigner__reply__free_unpacked(rep, NULL);
		}
		free(out);
		free(body);
	}
	close(sv[1]);
	ERR_clear_error();
	return 0;
}
