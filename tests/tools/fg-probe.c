/*
 * fg-probe: a raw ZeroMQ/CURVE client for the gateway's bad-input tests.
 *
 *   fg-probe ENDPOINT SERVER_KEY MODE [ARG]
 *
 * It connects as a fresh CURVE client (its own new key pair) and sends
 * what MODE says, then prints the reply as "STATUS MESSAGE" on stdout:
 *
 *   garbage N         N random bytes as one frame
 *   oversize N        a frame of N bytes (larger than the gateway's limit)
 *   multipart         a well-formed check-in split over two frames
 *   nobody            an envelope without a body
 *   badversion        an envelope with protocol version 99
 *   checkin           a check-in from this unknown key
 *   csr-badsig TOKEN  enrollment whose CSR signature is corrupted
 *   csr-rsa1024 TOKEN enrollment with a 1024-bit RSA key
 *   csr-k256 TOKEN    enrollment with a secp256k1 key
 *   csr-garbage TOKEN enrollment whose CSR is not DER at all
 *   enroll TOKEN      a valid P-256 enrollment (slot "probe", CN probe)
 *   renew CERT KEY [SIGNKEY]
 *                     renewal of CERT (PEM) with a new CSR; the proof of
 *                     possession is signed by SIGNKEY (default KEY, the
 *                     certificate's key)
 *
 * Environment: FG_PROBE_CURVE=FILE uses that CURVE key pair (an agent's
 * state_dir/curve.key) instead of a fresh one; FG_PROBE_SLOT sets the slot
 * (default "probe", "default" for renew).
 *
 * Exit: 0 reply printed, 3 no reply within 5 s (the gateway dropped it),
 * 2 usage or local error.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fg_curve.h"
#include "fg_util.h"
#include "fg_wire.h"
#include "fg_x509.h"

static int send_env(void *s, Fleetgate__Envelope *env)
{
	uint8_t *buf;
	size_t len;
	if (fg_wire_pack(env, &buf, &len) != 0)
		return -1;
	int rc = zmq_send(s, buf, len, 0) < 0 ? -1 : 0;
	free(buf);
	return rc;
}

/* A CSR for a key made here; kind selects the defect. */
static int make_csr(const char *kind, unsigned char **der, size_t *len)
{
	char err[256];
	EVP_PKEY *k = NULL;
	const char *dns[] = { "probe" };

	if (strcmp(kind, "csr-rsa1024") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	else if (strcmp(kind, "csr-k256") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
	else
		k = fg_key_generate(FG_KEY_P256, err, sizeof err);
	if (k == NULL)
		return -1;
	int rc = fg_csr_build(k, "probe", dns, 1, der, len, err, sizeof err);
	EVP_PKEY_free(k);
	if (rc != 0) {
		fprintf(stderr, "fg-probe: %s\n", err);
		return -1;
	}
	if (strcmp(kind, "csr-badsig") == 0)
		(*der)[*len - 5] ^= 0x55;   /* inside the signature BIT STRING */
	if (strcmp(kind, "csr-garbage") == 0)
		memset(*der, 0x41, *len);
	return 0;
}

int main(int argc, char **argv)
{
	char pub[41], sec[41], rid[33];
	int rc = 2;

	if (argc < 4) {
		fprintf(stderr, "usage: fg-probe ENDPOINT SERVER_KEY MODE [ARG]\n");
		return 2;
	}
	const char *mode = argv[3], *arg = argc > 4 ? argv[4] : "";
	void *ctx = zmq_ctx_new();
	void *s = zmq_socket(ctx, ZMQ_DEALER);
	int linger = 0, timeout = 5000;
	const char *curve = getenv("FG_PROBE_CURVE");
	char cerr[256];
	if (curve != NULL) {
		if (fg_curve_load(curve, 0, pub, sec, cerr, sizeof cerr) != 0) {
			fprintf(stderr, "fg-probe: %s\n", cerr);
			return 2;
		}
	} else {
		zmq_curve_keypair(pub, sec);
	}
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
	zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, argv[2], 40);
	zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40);
	zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40);
	if (zmq_connect(s, argv[1]) != 0) {
		fprintf(stderr, "fg-probe: connect %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
		goto out;
	}
	fg_request_id_new(rid);

	Fleetgate__Envelope env = FLEETGATE__ENVELOPE__INIT;
	Fleetgate__CheckIn ci = FLEETGATE__CHECK_IN__INIT;
	Fleetgate__EnrollRequest er = FLEETGATE__ENROLL_REQUEST__INIT;
	Fleetgate__RenewRequest rr = FLEETGATE__RENEW_REQUEST__INIT;
	Fleetgate__Facts facts = FLEETGATE__FACTS__INIT;
	const char *slot = getenv("FG_PROBE_SLOT");
	env.version = FG_PROTOCOL_VERSION;
	env.request_id = rid;
	facts.hostname = (char *)"probe";
	facts.secure_boot = -1;

	if (strcmp(mode, "garbage") == 0 || strcmp(mode, "oversize") == 0) {
		size_t n = (size_t)strtoul(arg, NULL, 10);
		unsigned char *buf = malloc(n ? n : 1);
		fg_random(buf, n);
		zmq_send(s, buf, n, 0);
		free(buf);
	} else if (strcmp(mode, "multipart") == 0) {
		env.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN;
		env.checkin = &ci;
		uint8_t *buf;
		size_t len;
		fg_wire_pack(&env, &buf, &len);
		zmq_send(s, buf, len / 2, ZMQ_SNDMORE);
		zmq_send(s, buf + len / 2, len - len / 2, 0);
		free(buf);
	} else if (strcmp(mode, "nobody") == 0) {
		send_env(s, &env);
	} else if (strcmp(mode, "badversion") == 0) {
		env.version = 99;
		env.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN;
		env.checkin = &ci;
		send_env(s, &env);
	} else if (strcmp(mode, "checkin") == 0) {
		ci.facts = &facts;
		env.body_case = FLEETGATE__ENVELOPE__BODY_CHECKIN;
		env.checkin = &ci;
		send_env(s, &env);
	} else if (strncmp(mode, "csr-", 4) == 0 || strcmp(mode, "enroll") == 0) {
		unsigned char *der = NULL;
		size_t len = 0;
		if (make_csr(mode, &der, &len) != 0)
			goto out;
		er.slot = (char *)(slot ? slot : "probe");
		er.csr_der.data = der;
		er.csr_der.len = len;
		er.token = (char *)arg;
		er.facts = &facts;
		env.body_case = FLEETGATE__ENVELOPE__BODY_ENROLL;
		env.enroll = &er;
		send_env(s, &env);
		free(der);
	} else if (strcmp(mode, "renew") == 0 && argc >= 6) {
		char *pem = NULL;
		size_t plen = 0;
		unsigned char *der = NULL, *cder = NULL, *sig = NULL;
		size_t len = 0, clen = 0, siglen = 0;
		EVP_PKEY *signer = NULL;
		STACK_OF(X509) *certs = NULL;
		int ok = 0;
		if (fg_read_file(argv[4], 1 << 20, &pem, &plen, cerr, sizeof cerr) == 0 &&
		    (certs = fg_certs_from_pem(pem, plen, cerr, sizeof cerr)) != NULL &&
		    fg_cert_to_der(sk_X509_value(certs, 0), &cder, &clen) == 0 &&
		    (signer = fg_key_load(argc > 6 ? argv[6] : argv[5], cerr, sizeof cerr)) != NULL &&
		    make_csr("renew", &der, &len) == 0 &&
		    fg_pop_sign(signer, rid, der, len, &sig, &siglen, cerr, sizeof cerr) == 0)
			ok = 1;
		if (ok) {
			rr.slot = (char *)(slot ? slot : "default");
			rr.csr_der.data = der;
			rr.csr_der.len = len;
			rr.current_cert_der.data = cder;
			rr.current_cert_der.len = clen;
			rr.pop_signature.data = sig;
			rr.pop_signature.len = siglen;
			rr.facts = &facts;
			env.body_case = FLEETGATE__ENVELOPE__BODY_RENEW;
			env.renew = &rr;
			send_env(s, &env);
		} else {
			fprintf(stderr, "fg-probe: cannot prepare the renewal: %s\n", cerr);
		}
		free(pem);
		free(der);
		free(cder);
		free(sig);
		EVP_PKEY_free(signer);
		sk_X509_pop_free(certs, X509_free);
		if (!ok)
			goto out;
	} else {
		fprintf(stderr, "fg-probe: unknown mode %s\n", mode);
		goto out;
	}

	zmq_msg_t m;
	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, s, 0) < 0) {
		printf("no-reply\n");
		rc = 3;
		zmq_msg_close(&m);
		goto out;
	}
	char err[256];
	Fleetgate__Envelope *r = fg_wire_unpack(zmq_msg_data(&m), zmq_msg_size(&m), 1 << 20, err,
						sizeof err);
	zmq_msg_close(&m);
	if (r == NULL) {
		printf("undecodable-reply %s\n", err);
		rc = 2;
		goto out;
	}
	switch (r->body_case) {
	case FLEETGATE__ENVELOPE__BODY_CERT_REPLY:
		printf("%s %s\n", fg_status_name(r->cert_reply->status), r->cert_reply->message);
		break;
	case FLEETGATE__ENVELOPE__BODY_CHECKIN_REPLY:
		printf("%s %s\n", fg_status_name(r->checkin_reply->status), r->checkin_reply->message);
		break;
	case FLEETGATE__ENVELOPE__BODY_ERROR:
		printf("%s %s\n", fg_status_name(r->error->status), r->error->message);
		break;
	default:
		printf("unexpected-reply %d\n", (int)r->body_case);
	}
	fg_wire_free(r);
	rc = 0;
out:
	zmq_close(s);
	zmq_ctx_term(ctx);
	return rc;
}
