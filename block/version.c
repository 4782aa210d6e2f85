/* SPDX-License-Identifier: MIT */
#include "config-host.h"
#include "strata/strata.h"

STRATA_EXPORT unsigned int strata_version(void)
{
    return STRATA_VERSION_ENCODE(STRATA_VERSION_MAJOR_NUM,
                                 STRATA_VERSION_MINOR_NUM,
                                 STRATA_VERSION_MICRO_NUM);
}

STRATA_EXPORT const char *strata_version_string(void)
{
    return STRATA_VERSION_STRING;
}
