# config/: YAML -> config model, validation, default config.
libngcore_a_SOURCES += \
	config/value.h \
	config/value.c \
	config/config.h \
	$(NULL)
