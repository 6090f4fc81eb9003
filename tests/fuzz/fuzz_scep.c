/*
 * fuzz_scep: the SCEP backend's readers of a SCEP server's answers
 * (plugins/scep, compiled in): GetCACaps text, GetCACert (one DER
 * certificate or a PKCS#7 bundle) and the choice of CA, RA recipient and
 * CertRep signer among its certificates against the pinned fingerprint,
 * and a CertRep (SignedData: signature by the CA, messageType,
 * transactionID, recipientNonce, pkiStatus, failInfo; on SUCCESS the
 * pkcsPKIEnvelope decrypted with the gateway's signer key and the
 * certs-only content inside, and the device's certificate taken from it).
 * The CA, the signer, the transaction id and
 * the nonce are those the seeds' CertReps were made for.
 */
#include <stddef.h>
#include <stdint.h>

#include "../../plugins/scep/scep.c"
#include "fuzz_scep_keys.h"

#define FUZZ_TXID "fuzz-scep-transaction-0001"
static const unsigned char fuzz_nonce[NONCE_LEN] = {
	0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
};

static void host_log(void *ctx, enum fg_level level, const char *rid, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)rid;
	(void)msg;
}

static int host_random(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	for (size_t i = 0; i < len; i++)
		((unsigned char *)buf)[i] = fuzz_nonce[i % NONCE_LEN];
	return 0;
}

static struct fg_host host = { .log = host_log, .random = host_random };
static struct scep scep = { .host = &host, .name = "upstream", .url = "http://scep.example/scep" };
static struct ca_view view;     /* the CA alone: it encrypts and signs */
static EVP_PKEY *dev_key;
static const char *const dns[] = { "dev1.example" };
static const struct fg_issue_request req = {
	.struct_size = sizeof req, .request_id = "fuzz-scep", .device_id = "dev_fuzz",
	.slot = "default", .subject_cn = "dev1", .dns_names = dns, .n_dns = 1, .profile = "default",
};

static void *pem_read(const char *pem, int key)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	void *x = b == NULL ? NULL : key ? (void *)PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)
					 : (void *)PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (x == NULL)
		abort();
	return x;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	nids_init();
	if (!nids_ok || pthread_mutex_init(&scep.mu, NULL) != 0)
		abort();
	scep.signer = pem_read(scep_signer_pem, 0);
	scep.signer_key = pem_read(scep_signer_key_pem, 1);
	dev_key = pem_read(scep_dev_key_pem, 1);
	view.refs = 1;
	view.ca = pem_read(scep_ca_pem, 0);
	view.enc = view.ver = view.ca;
	X509_up_ref(view.ca);
	X509_up_ref(view.ca);
	view.cipher = EVP_aes_128_cbc();
	view.md = EVP_sha256();
	if (cert_sha256(view.ca, scep.pin) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	/* as libcurl's body arrives (fgp_body_write): NUL-terminated */
	unsigned char *body = malloc(size + 1);
	if (body == NULL)
		return 0;
	memcpy(body, data, size);
	body[size] = 0;

	parse_caps((const char *)body);

	STACK_OF(X509) *certs = certs_from_cacert(body, size, "application/x-x509-ca-ra-cert");
	if (certs != NULL) {
		struct ca_view *v = calloc(1, sizeof *v);
		if (v != NULL) {
			v->refs = 1;
			pick_certs(&scep, certs, v, err, sizeof err);
			view_put(&scep, v);
		}
		sk_X509_pop_free(certs, X509_free);
	}

	struct certrep rep;
	if (parse_certrep(&scep, &view, body, size, FUZZ_TXID, fuzz_nonce, &rep, err, sizeof err) == 0) {
		if (rep.status == PKI_SUCCESS) {
			struct fg_issue_result res;
			memset(&res, 0, sizeof res);
			take_certificate(&scep, &view, &req, dev_key, &rep, FUZZ_TXID, &res);
			fg_issue_result_clear(&res);
		}
		certrep_clear(&rep);
	}
	ERR_clear_error();
	free(body);
	return 0;
}
