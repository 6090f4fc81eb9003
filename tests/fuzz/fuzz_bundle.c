/*
 * fuzz_bundle: the bootstrap bundle reader the agent runs on a file an
 * operator hands it (key = value lines, the token, PEM trust anchors). The
 * input is written to a memfd and read through /proc/self/fd, as a file.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fg_bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		fd = memfd_create("fuzz-bundle", MFD_CLOEXEC);
		if (fd < 0)
			return 0;
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		return 0;
	struct fg_bundle b = { 0 };
	char err[512];
	fg_bundle_read(path, &b, err, sizeof err);
	fg_bundle_clear(&b);
	return 0;
}
