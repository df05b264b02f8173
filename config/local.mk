# config/: YAML -> config model, validation, default config.
noinst_LIBRARIES += config/libngconfig.a
config_libngconfig_a_SOURCES = \
	config/yaml.h \
	config/yaml.c \
	config/config.h \
	config/implicit.c \
	config/config-int.h \
	config/config.c \
	config/nodes.c \
	$(NULL)

check_PROGRAMS += tests/unit/test-config
TESTS += tests/unit/test-config
tests_unit_test_config_SOURCES = tests/unit/test-config.c
tests_unit_test_config_LDADD = $(CORE_LIBS)

# Good configs (later integration tests use them too) and, in bad/, one
# X.yaml per error with its exact message in X.err.
EXTRA_DIST += \
	tests/configs \
	$(NULL)
