package org.lexrerank.pipeline;

import java.io.IOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.channels.UnresolvedAddressException;
import java.security.AccessController;
import java.security.PrivilegedAction;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Executor;

import org.opensearch.common.xcontent.XContentHelper;
import org.opensearch.common.xcontent.XContentFactory;
import org.opensearch.common.xcontent.json.JsonXContent;
import org.opensearch.core.common.bytes.BytesReference;

/**
 * The HTTP side of {@code POST /_lexrerank/rerank} (contract: worker/service_protocol.py).
 *
 * <p>One {@link HttpClient} per node, HTTP/1.1 (no h2c upgrade), its callbacks on the executor
 * given (OpenSearch's generic pool), so no search thread ever waits on the network. The send
 * runs in {@link AccessController#doPrivileged}: plugin-security.policy grants this code the
 * connect permission and nothing else.
 */
final class RerankService {

    static final String PATH = "/_lexrerank/rerank";
    static final int PROTOCOL_VERSION = 1;

    /** Why a call got no usable answer, as a reason code of worker/protocol.py's closed set. */
    static final class Failure extends Exception {
        final String code;

        Failure(String code, String message) {
            super(message);
            this.code = code;
        }
    }

    private static volatile HttpClient shared;

    private final URI endpoint;
    private final String apiKey;
    private final Executor executor;

    RerankService(URI serviceUrl, String apiKey, Executor executor) {
        this.endpoint = serviceUrl.resolve(PATH);
        this.apiKey = apiKey;
        this.executor = executor;
    }

    URI endpoint() {
        return endpoint;
    }

    private HttpClient client() {
        HttpClient client = shared;
        if (client == null) {
            synchronized (RerankService.class) {
                if (shared == null) {
                    shared = AccessController.doPrivileged((PrivilegedAction<HttpClient>) () -> HttpClient.newBuilder()
                        .version(HttpClient.Version.HTTP_1_1)
                        .connectTimeout(Duration.ofSeconds(2))
                        .followRedirects(HttpClient.Redirect.NEVER)
                        .executor(executor)
                        .build());
                }
                client = shared;
            }
        }
        return client;
    }

    /**
     * The service's answer to {@code request} (a JSON object as a map), within {@code timeoutMs};
     * completes exceptionally with a {@link Failure} otherwise. Never blocks the caller.
     */
    CompletableFuture<Map<String, Object>> call(Map<String, Object> request, long timeoutMs) {
        final String body;
        try {
            body = BytesReference.bytes(XContentFactory.jsonBuilder().map(request)).utf8ToString();
        } catch (IOException e) {
            return CompletableFuture.failedFuture(new Failure("gateway_error", "could not write the rerank request: " + e));
        }
        HttpRequest.Builder builder = HttpRequest.newBuilder(endpoint)
            .timeout(Duration.ofMillis(Math.max(timeoutMs, 1)))
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body));
        if (apiKey != null) {
            builder.header("X-API-Key", apiKey);
        }
        HttpRequest httpRequest = builder.build();
        CompletableFuture<HttpResponse<String>> sent = AccessController.doPrivileged(
            (PrivilegedAction<CompletableFuture<HttpResponse<String>>>) () -> client().sendAsync(httpRequest,
                HttpResponse.BodyHandlers.ofString()));
        return sent.handle((response, error) -> {
            if (error != null) {
                throw new CompletionException(failure(unwrap(error), timeoutMs));
            }
            return answer(response);
        });
    }

    private static Throwable unwrap(Throwable error) {
        while (error instanceof CompletionException && error.getCause() != null) {
            error = error.getCause();
        }
        return error;
    }

    private Failure failure(Throwable error, long timeoutMs) {
        if (error instanceof HttpConnectTimeoutException || error instanceof ConnectException
            || error instanceof UnresolvedAddressException || error.getCause() instanceof ConnectException) {
            return new Failure("service_unavailable", "the rerank service at " + endpoint + " is unreachable: "
                + error.getClass().getSimpleName() + (error.getMessage() == null ? "" : ": " + error.getMessage()));
        }
        if (error instanceof HttpTimeoutException) {
            return new Failure("timeout", "no answer from the rerank service at " + endpoint + " within " + timeoutMs + " ms");
        }
        return new Failure("service_unavailable", "the rerank call to " + endpoint + " failed: "
            + error.getClass().getSimpleName() + (error.getMessage() == null ? "" : ": " + error.getMessage()));
    }

    private Map<String, Object> answer(HttpResponse<String> response) {
        Map<String, Object> body;
        try {
            body = XContentHelper.convertToMap(JsonXContent.jsonXContent, response.body(), true);
        } catch (RuntimeException e) {
            body = null;
        }
        if (response.statusCode() != 200) {
            String reason = errorReason(body);
            String code = response.statusCode() == 400 ? "bad_request" : "service_error";
            throw new CompletionException(new Failure(code, "the rerank service answered HTTP " + response.statusCode()
                + (reason == null ? "" : ": " + reason)));
        }
        if (body == null) {
            throw new CompletionException(new Failure("bad_answer", "the rerank service's answer is not JSON"));
        }
        if (!Integer.valueOf(PROTOCOL_VERSION).equals(body.get("version"))) {
            throw new CompletionException(new Failure("bad_answer", "the rerank service answered protocol version "
                + body.get("version") + ", this plugin speaks " + PROTOCOL_VERSION));
        }
        return body;
    }

    /** {@code error.reason} of an answer in OpenSearch's error shape, or null. */
    private static String errorReason(Map<String, Object> body) {
        if (body != null && body.get("error") instanceof Map) {
            Object reason = ((Map<?, ?>) body.get("error")).get("reason");
            return reason == null ? null : String.valueOf(reason);
        }
        return null;
    }
}
