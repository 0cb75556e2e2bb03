/*
 * test/bench/curl_loop.c: the same sequential POSTs maileroo_send_now()
 * makes, from a bare libcurl loop outside the database, on one kept
 * connection.  test/bench/send.sh runs it beside the database calls, so
 * the rate this machine's loopback and server allow is printed next to
 * the rate the extension reaches.
 *
 *   curl_loop URL CALLS      prints "calls/s median_ms"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

static const char body[] =
	"{\"from\":{\"address\":\"shop@example.com\",\"display_name\":\"Shop\"},"
	"\"to\":[{\"address\":\"jane@example.org\"}],\"subject\":\"Benchmark\","
	"\"plain\":\"Hello\",\"reference_id\":\"0123456789abcdef01234567\"}";

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	(void) ptr;
	(void) userdata;
	return size * nmemb;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	CURL	   *easy;
	struct curl_slist *headers = NULL;
	double	   *ms;
	double		start;
	int			calls;
	int			i;

	if (argc != 3 || (calls = atoi(argv[2])) <= 0)
	{
		fprintf(stderr, "usage: curl_loop URL CALLS\n");
		return 2;
	}
	ms = calloc(calls, sizeof(double));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	easy = curl_easy_init();
	if (ms == NULL || easy == NULL)
		return 1;
	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "X-Api-Key: bench-key");
	curl_easy_setopt(easy, CURLOPT_URL, argv[1]);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);

	start = now_ms();
	for (i = 0; i < calls; i++)
	{
		double		t0 = now_ms();
		long		status = 0;

		if (curl_easy_perform(easy) != CURLE_OK ||
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK ||
			status != 200)
		{
			fprintf(stderr, "call %d failed (HTTP %ld)\n", i, status);
			return 1;
		}
		ms[i] = now_ms() - t0;
	}
	qsort(ms, calls, sizeof(double), cmp_double);
	printf("%.1f %.3f\n", calls * 1000.0 / (now_ms() - start),
		   calls % 2 ? ms[calls / 2] : (ms[calls / 2 - 1] + ms[calls / 2]) / 2);
	curl_slist_free_all(headers);
	curl_easy_cleanup(easy);
	curl_global_cleanup();
	free(ms);
	return 0;
}
