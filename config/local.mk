# config/: YAML -> config model, validation, default config.
noinst_LIBRARIES += config/libngconfig.a
config_libngconfig_a_SOURCES = \
	config/yaml.h \
	config/yaml.c \
	config/config.h \
	config/implicit.c \
	config/config-int.h \
	config/config.c \
	config/allow.c \
	config/nodes.c \
	config/cli.c \
	config/plan.h \
	config/live.c \
	config/plan.c \
	config/dump.c \
	$(NULL)

check_PROGRAMS += tests/unit/test-config
TESTS += tests/unit/test-config
tests_unit_test_config_SOURCES = tests/unit/test-config.c
tests_unit_test_config_LDADD = $(CORE_LIBS)

check_PROGRAMS += tests/unit/test-plan
TESTS += tests/unit/test-plan
tests_unit_test_plan_SOURCES = tests/unit/test-plan.c
tests_unit_test_plan_LDADD = $(CORE_LIBS)

check_PROGRAMS += tests/unit/test-allow
TESTS += tests/unit/test-allow
tests_unit_test_allow_SOURCES = tests/unit/test-allow.c
tests_unit_test_allow_LDADD = $(CORE_LIBS)

# Good configs (later integration tests use them too) and, in bad/, one
# X.yaml per error with its exact message in X.err.
EXTRA_DIST += \
	tests/configs \
	$(NULL)

# config/ links over filters/ and graph/ alone: every object forced in.
check_PROGRAMS += tests/unit/test-layer-link-config
TESTS += tests/unit/test-layer-link-config
tests_unit_test_layer_link_config_SOURCES = tests/unit/test-layer-link.c
tests_unit_test_layer_link_config_CPPFLAGS = \
	$(AM_CPPFLAGS) -DLINK_ALL_DRIVERS -DLAYER='"config"'
tests_unit_test_layer_link_config_LDFLAGS = \
	$(AM_LDFLAGS) \
	-Wl,--whole-archive,config/libngconfig.a,filters/libngfilters.a \
	-Wl,graph/libnggraph.a,--no-whole-archive \
	$(NULL)
tests_unit_test_layer_link_config_LDADD = \
	nac/libngnac.a \
	$(LIBUV_LIBS) \
	$(GNUTLS_LIBS) \
	$(JANSSON_LIBS) \
	$(ARGON2_LIBS) \
	$(ZLIB_LIBS) \
	$(LIBNBD_LIBS) \
	$(LIBRBD_LIBS) \
	$(LIBURING_LIBS) \
	$(YAML_LIBS) \
	-lpthread \
	$(NULL)
EXTRA_tests_unit_test_layer_link_config_DEPENDENCIES = \
	config/libngconfig.a filters/libngfilters.a graph/libnggraph.a
