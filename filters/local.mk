# filters/: one file per filter driver; filters.c lists them all.
libngcore_a_SOURCES += \
	filters/filters.c \
	filters/nofilter.c \
	$(NULL)
