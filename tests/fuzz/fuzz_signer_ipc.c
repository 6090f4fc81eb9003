/*
 * fuzz_signer_ipc: the signer's side of the IPC stream, as a compromised
 * daemon would write it: the input through a socketpair into
 * signer_ipc_recv_buf (header checks, buffered reads, body sizes), every
 * message read to the end of the stream and its body decoded as an
 * fgsigner.Request. (The signer's checks of the items, which need a CA
 * set up in the initialisation, are not driven yet.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "signer.pb-c.h"
#include "signer_ipc.h"

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
	for (int i = 0; i < 64; i++) {
		struct signer_hdr h;
		unsigned char *body = NULL;
		char err[256];
		if (signer_ipc_recv_buf(sv[1], &rb, SIGNER_MSG_MAX, &h, &body, err, sizeof err) != 0)
			break;
		Fgsigner__Request *req = h.type == SIGNER_MSG_REQUEST ? fgsigner__request__unpack(NULL, h.len, body) : NULL;
		fgsigner__request__free_unpacked(req, NULL);
		free(body);
	}
	close(sv[1]);
	return 0;
}
