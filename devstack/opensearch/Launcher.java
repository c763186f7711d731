// A single OpenSearch 2.19 node for the devstack, assembled from Maven Central jars.
//
// Run as a single-file source program (no compile step):
//   java -cp "$(cat .devstack/opensearch/classpath.txt)" devstack/opensearch/Launcher.java [key=value ...]
//
// Settings come from, lowest precedence first: the defaults below, system properties
// named "searchsync.os.<setting>" (e.g. -Dsearchsync.os.http.port=9200), then key=value
// args (e.g. http.port=9200). (Not "opensearch.*": the server reads some of those itself.) path.home is required; path.data and path.logs default to
// path.home/data and path.home/logs.
//
// The node is a plain org.opensearch.node.Node with the modules passed as classpath
// plugins (the 2.19 protected constructor); nothing is installed under path.home/modules.

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.cluster.service.ClusterService;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.join.ParentJoinPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

public class Launcher {

    static final String PROP_PREFIX = "searchsync.os.";

    static final List<Class<? extends Plugin>> PLUGINS = List.of(
        Netty4Plugin.class,          // HTTP + transport
        CommonAnalysisPlugin.class,  // standard analyzers/filters beyond "standard"
        ReindexPlugin.class,         // _reindex, _update_by_query, _delete_by_query
        MapperExtrasPlugin.class,    // scaled_float, rank_feature, search_as_you_type, ...
        PainlessPlugin.class,        // painless scripts
        ParentJoinPlugin.class       // join field
    );

    static class DevNode extends Node {
        DevNode(Environment env, Collection<Class<? extends Plugin>> plugins) {
            super(env, plugins, true);
        }

        @Override
        protected void configureNodeAndClusterIdStateListener(ClusterService clusterService) {
            // The stock listener feeds log4j's node/cluster id converters, which are set up
            // by OpenSearch's own LogConfigurator; we use a plain log4j2 config instead.
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> s = new LinkedHashMap<>();
        s.put("cluster.name", "searchsync-dev");
        s.put("node.name", "searchsync-dev-1");
        s.put("network.host", "127.0.0.1");
        s.put("http.port", "9200");
        s.put("transport.port", "9300");
        s.put("discovery.type", "single-node");
        s.put("cluster.routing.allocation.disk.threshold_enabled", "false");
        s.put("action.auto_create_index", "true");
        s.put("http.cors.enabled", "false");

        for (String name : System.getProperties().stringPropertyNames()) {
            if (name.startsWith(PROP_PREFIX)) {
                s.put(name.substring(PROP_PREFIX.length()), System.getProperty(name));
            }
        }
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                System.err.println("ignoring argument without '=': " + arg);
                continue;
            }
            s.put(arg.substring(0, eq), arg.substring(eq + 1));
        }

        String home = s.get("path.home");
        if (home == null || home.isEmpty()) {
            System.err.println("path.home is required (arg path.home=... or -D" + PROP_PREFIX + "path.home=...)");
            System.exit(2);
        }
        Path homePath = Paths.get(home).toAbsolutePath();
        s.put("path.home", homePath.toString());
        s.putIfAbsent("path.data", homePath.resolve("data").toString());
        s.putIfAbsent("path.logs", homePath.resolve("logs").toString());
        for (String dir : List.of("modules", "plugins", "config")) {
            Files.createDirectories(homePath.resolve(dir));
        }
        Files.createDirectories(Paths.get(s.get("path.data")));
        Files.createDirectories(Paths.get(s.get("path.logs")));

        Settings.Builder builder = Settings.builder();
        s.forEach(builder::put);
        Settings settings = builder.build();

        Environment env = InternalSettingsPreparer.prepareEnvironment(
            settings, new HashMap<>(), homePath.resolve("config"), () -> s.get("node.name"));

        Node node = new DevNode(env, PLUGINS);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (IOException e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "devstack-opensearch-shutdown"));

        try {
            node.start();
        } catch (Throwable t) {
            t.printStackTrace();
            try { node.close(); } catch (Throwable ignored) { }
            System.exit(1);
        }
        System.out.println("[launcher] OpenSearch node '" + s.get("node.name") + "' started: http://"
            + s.get("network.host") + ":" + s.get("http.port") + " (cluster " + s.get("cluster.name") + ")");
        stopped.await();
    }
}
