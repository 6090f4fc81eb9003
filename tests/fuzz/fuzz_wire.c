/*
 * fuzz_wire: the envelope every device message arrives in (fg_wire_unpack:
 * size cap, protobuf-c decode, version and request id checks), then the
 * decoded envelope packed again, as the gateway answers with the same code.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fg_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	Fleetgate__Envelope *env = fg_wire_unpack(data, size, 65536, err, sizeof err);
	if (env == NULL)
		return 0;
	uint8_t *buf = NULL;
	size_t len = 0;
	if (fg_wire_pack(env, &buf, &len) == 0)
		free(buf);
	fg_wire_free(env);
	return 0;
}
