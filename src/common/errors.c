/* The one table of error codes, shared by the library, the daemon and the CLI. */
#include "zerogpu.h"

const char *zgpu_strerror(int err)
{
	switch (err) {
	case ZGPU_OK:
		return "success";
#define ZGPU__STRERROR_CASE(num, name, msg)                                                        \
	case ZGPU_##name:                                                                          \
		return msg;
		ZGPU_ERRNO_MAP(ZGPU__STRERROR_CASE)
#undef ZGPU__STRERROR_CASE
	}
	return "unknown error";
}

const char *zgpu_err_name(int err)
{
	switch (err) {
	case ZGPU_OK:
		return "OK";
#define ZGPU__NAME_CASE(num, name, msg)                                                            \
	case ZGPU_##name:                                                                          \
		return #name;
		ZGPU_ERRNO_MAP(ZGPU__NAME_CASE)
#undef ZGPU__NAME_CASE
	}
	return "UNKNOWN";
}
