// SPDX-License-Identifier: GPL-2.0
/*
 * ih-kmsg: the kernel log records from a sequence number on, for the harness's per-step
 * slicing. busybox has no way to read /dev/kmsg without blocking at its end.
 *
 *   ih-kmsg SEQ   print every record with sequence number >= SEQ, in /dev/kmsg's own format
 *                 ("prio,seq,usec,flags;text", Documentation/ABI/testing/dev-kmsg), and exit
 *   ih-kmsg -n    print the sequence number the next record will get, and the timestamp
 *                 (microseconds) of the last one: "SEQ USEC"
 *
 * Records overwritten before they were read (EPIPE) are skipped; the harness sees the gap in
 * the sequence numbers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static char buf[16384];
	unsigned long long since = 0, next = 0, last_usec = 0;
	int next_only = argc > 1 && strcmp(argv[1], "-n") == 0;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: ih-kmsg SEQ | -n\n");
		return 2;
	}
	if (!next_only)
		since = strtoull(argv[1], NULL, 10);
	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (fd < 0) {
		perror("ih-kmsg: /dev/kmsg");
		return 1;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		unsigned long long seq, usec;

		if (n < 0 && errno == EPIPE)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		buf[n] = '\0';
		if (sscanf(buf, "%*u,%llu,%llu,", &seq, &usec) != 2)
			continue;
		next = seq + 1;
		last_usec = usec;
		if (!next_only && seq >= since)
			fwrite(buf, 1, (size_t)n, stdout);
	}
	if (next_only)
		printf("%llu %llu\n", next, last_usec);
	return 0;
}
