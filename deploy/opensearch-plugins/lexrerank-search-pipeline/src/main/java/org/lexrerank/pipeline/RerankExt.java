package org.lexrerank.pipeline;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;

import org.opensearch.core.common.io.stream.StreamInput;
import org.opensearch.core.common.io.stream.StreamOutput;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.core.xcontent.XContentParser;
import org.opensearch.search.SearchExtBuilder;

/**
 * {@code ext.rerank}: in a request, the rerank options (checked as the gateway checks them);
 * in a response, the report block ({@code status}, {@code reason_code}, ...).
 */
public final class RerankExt extends SearchExtBuilder {

    public static final String NAME = "rerank";
    static final Set<String> KEYS = Set.of("query_context", "window_size", "model", "timeout_ms", "explain");
    static final int MAX_WINDOW = 1000;
    static final int MAX_TIMEOUT_MS = 60_000;

    private final Map<String, Object> content;

    public RerankExt(Map<String, Object> content) {
        this.content = Objects.requireNonNull(content);
    }

    public RerankExt(StreamInput in) throws IOException {
        this.content = in.readMap();
    }

    /** Parses and checks a request's {@code ext.rerank}; IllegalArgumentException naming the problem. */
    public static RerankExt parse(XContentParser parser) throws IOException {
        if (parser.currentToken() != XContentParser.Token.START_OBJECT) {
            throw new IllegalArgumentException("ext.rerank must be an object");
        }
        Map<String, Object> options = parser.mapOrdered();
        check(options);
        return new RerankExt(options);
    }

    /** The checks of gateway/rerank_request.py, with its messages. */
    static void check(Map<String, Object> options) {
        Set<String> unknown = new TreeSet<>(options.keySet());
        unknown.removeAll(KEYS);
        if (!unknown.isEmpty()) {
            throw new IllegalArgumentException("unknown key(s) " + pyList(unknown) + " in ext.rerank; known: "
                + pyList(new TreeSet<>(KEYS)));
        }
        if (options.containsKey("window_size")) {
            integer(options.get("window_size"), "ext.rerank.window_size", 1, MAX_WINDOW);
        }
        if (options.containsKey("timeout_ms")) {
            integer(options.get("timeout_ms"), "ext.rerank.timeout_ms", 1, MAX_TIMEOUT_MS);
        }
        if (options.containsKey("model")) {
            Object model = options.get("model");
            if (!(model instanceof String) || ((String) model).isBlank()) {
                throw new IllegalArgumentException("ext.rerank.model must be a non-empty string");
            }
        }
        if (options.containsKey("explain") && !(options.get("explain") instanceof Boolean)) {
            throw new IllegalArgumentException("ext.rerank.explain must be true or false");
        }
        if (options.containsKey("query_context")) {
            Object context = options.get("query_context");
            if (!(context instanceof Map)) {
                throw new IllegalArgumentException("ext.rerank.query_context must be an object with query_text or "
                    + "query_text_path");
            }
            Map<?, ?> map = (Map<?, ?>) context;
            if (map.containsKey("query_text")) {
                Object text = map.get("query_text");
                if (!(text instanceof String) || ((String) text).isBlank()) {
                    throw new IllegalArgumentException("ext.rerank.query_context.query_text must be a non-empty string");
                }
            } else if (!map.containsKey("query_text_path")) {
                throw new IllegalArgumentException("ext.rerank.query_context needs query_text or query_text_path");
            }
        }
    }

    /** An integer option (a JSON number, or digits as the gateway also takes) within [low, high]. */
    static int integer(Object value, String name, int low, int high) {
        Long parsed = null;
        if (value instanceof Integer || value instanceof Long || value instanceof Short) {
            parsed = ((Number) value).longValue();
        } else if (value instanceof String && ((String) value).strip().matches("-?[0-9]{1,18}")) {
            parsed = Long.parseLong(((String) value).strip());
        }
        if (parsed == null) {
            throw new IllegalArgumentException(name + " must be an integer, got " + value);
        }
        if (parsed < low || parsed > high) {
            throw new IllegalArgumentException(name + " must be between " + low + " and " + high + ", got " + parsed);
        }
        return parsed.intValue();
    }

    private static String pyList(Set<String> names) {
        StringBuilder out = new StringBuilder("[");
        for (String name : names) {
            out.append(out.length() > 1 ? ", '" : "'").append(name).append('\'');
        }
        return out.append(']').toString();
    }

    /** The options or report, as parsed or built. */
    public Map<String, Object> content() {
        return content;
    }

    /** {@code ext.rerank} of a request's extensions, or an empty map. */
    static Map<String, Object> of(List<SearchExtBuilder> exts) {
        if (exts != null) {
            for (SearchExtBuilder ext : exts) {
                if (ext instanceof RerankExt) {
                    return ((RerankExt) ext).content;
                }
            }
        }
        return new LinkedHashMap<>();
    }

    @Override
    public String getWriteableName() {
        return NAME;
    }

    @Override
    public void writeTo(StreamOutput out) throws IOException {
        out.writeMap(content);
    }

    @Override
    public XContentBuilder toXContent(XContentBuilder builder, Params params) throws IOException {
        return builder.field(NAME, content);
    }

    @Override
    public int hashCode() {
        return content.hashCode();
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof RerankExt && ((RerankExt) other).content.equals(content);
    }
}
