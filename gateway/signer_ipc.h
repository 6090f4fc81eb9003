/*
 * signer_ipc: the framing of the messages between the daemon and its
 * signer process (the bodies are proto/signer.proto).
 *
 * Each message is a fixed header, in host byte order (both ends are the
 * same program on the same machine), then len bytes of body:
 *
 *   magic    u32  SIGNER_IPC_MAGIC, "FGS1"
 *   version  u16  SIGNER_IPC_VERSION
 *   type     u16  enum signer_msg_type
 *   len      u32  body bytes, at most SIGNER_MSG_MAX: checked before the
 *                 body is read
 *   id       u32  the sender's message id, echoed in the reply
 *
 * (OpenBSD's imsg has the same shape.) The side that holds the key trusts
 * nothing it receives: a bad header is reported and the stream closed, a
 * body that does not decode is answered with an error and dropped.
 */
#ifndef FG_SIGNER_IPC_H
#define FG_SIGNER_IPC_H

#include <stddef.h>
#include <stdint.h>

#define SIGNER_IPC_MAGIC 0x31534746u     /* "FGS1" in memory on little-endian hosts */
#define SIGNER_IPC_VERSION 1
#define SIGNER_MSG_MAX (16u * 1024 * 1024) /* bytes of body: a CRL of ~300,000 entries */
#define SIGNER_MAX_ITEMS 4096            /* items per request */

enum signer_msg_type {
	SIGNER_MSG_REQUEST = 1,          /* daemon -> signer: fgsigner.Request */
	SIGNER_MSG_REPLY = 2,            /* signer -> daemon: fgsigner.Reply */
	/* Test builds of the protocol only: a signer started with
	 * SIGNER_TEST_HOOKS honours it by attempting a system call its
	 * filter forbids (the test then sees the kernel kill it); any other
	 * signer answers it as an unknown type. */
	SIGNER_MSG_TEST_FORBIDDEN = 99,
	SIGNER_MSG_MAX_TYPE
};

struct signer_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t len;
	uint32_t id;
};

/* Write one message (header and body) to fd, retrying short writes and
 * EINTR. 0, or -1 with errno set (EPIPE: the peer is gone). */
int signer_ipc_send(int fd, uint16_t type, uint32_t id, const void *body, size_t len);

/* Read one message from fd into *h and *body (malloc'd, NUL-terminated
 * one past len, the caller frees; NULL when len is 0). Returns 0 on a
 * message, 1 on a clean end of stream before a header, -1 with err on a
 * read error, a short message, or a header that fails its checks (bad
 * magic or version, len above max): the stream cannot be trusted after
 * that and the caller closes it. */
int signer_ipc_recv(int fd, size_t max, struct signer_hdr *h, unsigned char **body, char *err,
		    size_t errlen);

/* The same, reading through a buffer of the caller's: one read(2) takes
 * the header and a body of up to SIGNER_RBUF_SIZE together (a small
 * message costs one system call, not two), and bytes of a next message
 * stay for the next call. Zero it before the first call on an fd, and
 * again whenever the fd changes. */
#define SIGNER_RBUF_SIZE 16384
struct signer_rbuf {
	size_t off, len;                 /* unread bytes are b[off .. off+len) */
	unsigned char b[SIGNER_RBUF_SIZE];
};
int signer_ipc_recv_buf(int fd, struct signer_rbuf *rb, size_t max, struct signer_hdr *h, unsigned char **body,
			char *err, size_t errlen);

#endif
