/*
 * scep_seed: writes the PKCSReq that the SCEP backend (plugins/scep,
 * compiled in) sends for the fuzz_scep device, with fuzz_scep's
 * transaction id, nonce and signer, encrypted to the CA certificate
 * given. tests/fuzz/make-scep-seeds.sh posts it to tests/tools/scep-responder
 * and keeps the CertRep answers as fuzz_scep's seeds.
 *
 *   scep_seed CA.crt > pkcsreq.der
 */
#include <stdio.h>

#define LLVMFuzzerInitialize scep_seed_init
#define LLVMFuzzerTestOneInput scep_seed_unused
#include "fuzz_scep.c"

int main(int argc, char **argv)
{
	char err[512];
	unsigned char *msg = NULL;
	size_t len = 0;
	FILE *f;

	if (argc != 2 || (f = fopen(argv[1], "r")) == NULL) {
		fprintf(stderr, "usage: scep_seed CA.crt > pkcsreq.der\n");
		return 2;
	}
	scep_seed_init(NULL, NULL);
	X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (ca == NULL) {
		fprintf(stderr, "scep_seed: %s is not a PEM certificate\n", argv[1]);
		return 1;
	}
	view.enc = ca;

	X509_REQ *rq = X509_REQ_new();
	X509_NAME *nm = X509_NAME_new();
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	unsigned char *csr = NULL;
	int csrlen;
	if (rq == NULL || nm == NULL || gens == NULL || g == NULL || ia5 == NULL || exts == NULL ||
	    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"dev1", -1, -1, 0) != 1 ||
	    X509_REQ_set_subject_name(rq, nm) != 1 || X509_REQ_set_pubkey(rq, dev_key) != 1 ||
	    ASN1_STRING_set(ia5, dns[0], -1) != 1)
		goto fail;
	GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
	if (sk_GENERAL_NAME_push(gens, g) <= 0)
		goto fail;
	X509_EXTENSION *ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
	if (ext == NULL || sk_X509_EXTENSION_push(exts, ext) <= 0 || X509_REQ_add_extensions(rq, exts) != 1 ||
	    X509_REQ_sign(rq, dev_key, EVP_sha256()) <= 0 || (csrlen = i2d_X509_REQ(rq, &csr)) <= 0)
		goto fail;
	if (build_message(&scep, &view, 19 /* PKCSReq */, FUZZ_TXID, fuzz_nonce, csr, (size_t)csrlen, &msg, &len,
			  err, sizeof err) != 0) {
		fprintf(stderr, "scep_seed: %s\n", err);
		return 1;
	}
	fwrite(msg, 1, len, stdout);
	int rc = fflush(stdout) == 0 ? 0 : 1;
	OPENSSL_free(msg);
	OPENSSL_free(csr);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	X509_NAME_free(nm);
	X509_REQ_free(rq);
	X509_free(ca);
	return rc;
fail:
	fprintf(stderr, "scep_seed: cannot make the device's CSR\n");
	return 1;
}
