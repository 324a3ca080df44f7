package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type k8sMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Ports        []k8sPort `yaml:"ports"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	ReadinessProbe  *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe   *k8sProbe `yaml:"livenessProbe"`
	SecurityContext *struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
}

type k8sDeployment struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               *struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
						Items      []struct {
							Key  string `yaml:"key"`
							Path string `yaml:"path"`
						} `yaml:"items"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sService struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Port       int `yaml:"port"`
			TargetPort any `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sPDB struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	} `yaml:"spec"`
}

type k8sConfigMap struct {
	Metadata k8sMeta           `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type k8sSecret struct {
	Metadata   k8sMeta           `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
}

type k8sObjects struct {
	files       []string // base names of the manifests (not kustomization.yaml)
	resources   []string // kustomization.yaml resources
	deployments []k8sDeployment
	services    []k8sService
	pdbs        []k8sPDB
	configMaps  []k8sConfigMap
	secrets     []k8sSecret
}

// loadKubernetes parses every YAML document under deploy/kubernetes.
func loadKubernetes(t *testing.T) k8sObjects {
	t.Helper()
	var objs k8sObjects
	paths, _ := filepath.Glob(filepath.Join(root, "deploy/kubernetes/*.yaml"))
	if len(paths) == 0 {
		t.Fatal("no deploy/kubernetes/*.yaml")
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Base(p)
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("parse %s: %v", base, err)
			}
			var head struct {
				APIVersion string   `yaml:"apiVersion"`
				Kind       string   `yaml:"kind"`
				Resources  []string `yaml:"resources"`
			}
			if err := n.Decode(&head); err != nil {
				t.Fatalf("%s: %v", base, err)
			}
			if head.APIVersion == "" || head.Kind == "" {
				t.Fatalf("%s: document without apiVersion and kind", base)
			}
			var err error
			switch head.Kind {
			case "Kustomization":
				objs.resources = head.Resources
				continue
			case "Deployment":
				var d k8sDeployment
				err = n.Decode(&d)
				objs.deployments = append(objs.deployments, d)
			case "Service":
				var s k8sService
				err = n.Decode(&s)
				objs.services = append(objs.services, s)
			case "PodDisruptionBudget":
				var s k8sPDB
				err = n.Decode(&s)
				objs.pdbs = append(objs.pdbs, s)
			case "ConfigMap":
				var s k8sConfigMap
				err = n.Decode(&s)
				objs.configMaps = append(objs.configMaps, s)
			case "Secret":
				var s k8sSecret
				err = n.Decode(&s)
				objs.secrets = append(objs.secrets, s)
			}
			if err != nil {
				t.Fatalf("%s: %s: %v", base, head.Kind, err)
			}
		}
		if base != "kustomization.yaml" {
			objs.files = append(objs.files, base)
		}
	}
	return objs
}

// subset reports whether every label in sel is in labels.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	objs := loadKubernetes(t)
	if len(objs.deployments) != 1 || len(objs.services) == 0 || len(objs.pdbs) == 0 || len(objs.configMaps) == 0 || len(objs.secrets) == 0 {
		t.Fatalf("want a Deployment, Service, PodDisruptionBudget, ConfigMap and Secret; have %d, %d, %d, %d, %d",
			len(objs.deployments), len(objs.services), len(objs.pdbs), len(objs.configMaps), len(objs.secrets))
	}
	d := objs.deployments[0]
	pod := d.Spec.Template
	if !subset(d.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		t.Errorf("deployment selector %v does not match its pod labels %v", d.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// Ports: the container's http port, by name or number.
	portNames := map[string]int{}
	for _, p := range c.Ports {
		portNames[p.Name] = p.ContainerPort
	}
	resolvePort := func(p any) int {
		switch v := p.(type) {
		case int:
			return v
		case string:
			return portNames[v]
		}
		return 0
	}

	t.Run("container", func(t *testing.T) {
		if len(c.Args) == 0 || c.Args[0] != "serve" {
			t.Errorf("args = %q, want serve ...", c.Args)
		}
		if v, _ := flagValue(c.Args, "listen"); v != "0.0.0.0:8080" {
			t.Errorf("--listen = %q, want 0.0.0.0:8080", v)
		}
		if !slices.ContainsFunc(c.Ports, func(p k8sPort) bool { return p.ContainerPort == 8080 }) {
			t.Error("no containerPort 8080")
		}
		if pod.Spec.SecurityContext == nil || !pod.Spec.SecurityContext.RunAsNonRoot {
			t.Error("pod securityContext.runAsNonRoot is not true")
		}
		if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
			t.Error("container securityContext.allowPrivilegeEscalation is not false")
		}
	})

	t.Run("probes", func(t *testing.T) {
		tests := []struct {
			name  string
			probe *k8sProbe
			path  string
		}{
			{"readiness", c.ReadinessProbe, "/readyz"},
			{"liveness", c.LivenessProbe, "/healthz"},
		}
		for _, tt := range tests {
			if tt.probe == nil || tt.probe.HTTPGet == nil {
				t.Errorf("%s probe: want httpGet %s", tt.name, tt.path)
				continue
			}
			if tt.probe.HTTPGet.Path != tt.path {
				t.Errorf("%s probe path = %q, want %s", tt.name, tt.probe.HTTPGet.Path, tt.path)
			}
			if got := resolvePort(tt.probe.HTTPGet.Port); got != 8080 {
				t.Errorf("%s probe port %v resolves to %d, want 8080", tt.name, tt.probe.HTTPGet.Port, got)
			}
		}
	})

	t.Run("grace period", func(t *testing.T) {
		env := map[string]string{}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			i := slices.IndexFunc(objs.configMaps, func(cm k8sConfigMap) bool { return cm.Metadata.Name == ef.ConfigMapRef.Name })
			if i < 0 {
				t.Fatalf("envFrom ConfigMap %q is not in deploy/kubernetes", ef.ConfigMapRef.Name)
			}
			for k, v := range objs.configMaps[i].Data {
				env[k] = v
			}
		}
		for _, e := range c.Env {
			if e.Value != "" {
				env[e.Name] = e.Value
			}
		}
		drain, err := drainOf(c.Args, env)
		if err != nil {
			t.Fatal(err)
		}
		if pod.Spec.TerminationGracePeriodSeconds == nil {
			t.Fatal("no terminationGracePeriodSeconds")
		}
		if grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= drain {
			t.Errorf("terminationGracePeriodSeconds %v must exceed the drain %v", grace, drain)
		}
	})

	// The publish token comes from the Secret: as a file
	// (REFCAST_PUBLISH_TOKEN_FILE on a secret volume) or an env secretKeyRef.
	t.Run("secret", func(t *testing.T) {
		hasKey := func(name, key string) bool {
			i := slices.IndexFunc(objs.secrets, func(s k8sSecret) bool { return s.Metadata.Name == name })
			if i < 0 {
				return false
			}
			_, inData := objs.secrets[i].Data[key]
			_, inString := objs.secrets[i].StringData[key]
			return inData || inString
		}
		// Files the pod gets from Secrets: path to "secret/key".
		secretFiles := map[string]string{}
		for _, m := range c.VolumeMounts {
			for _, v := range pod.Spec.Volumes {
				if v.Name != m.Name || v.Secret == nil {
					continue
				}
				for _, it := range v.Secret.Items {
					if !hasKey(v.Secret.SecretName, it.Key) {
						t.Errorf("volume %s: Secret %q has no key %q", v.Name, v.Secret.SecretName, it.Key)
					}
					secretFiles[path.Join(m.MountPath, it.Path)] = v.Secret.SecretName + "/" + it.Key
				}
			}
		}
		found := false
		for _, e := range c.Env {
			switch {
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				if !hasKey(ref.Name, ref.Key) {
					t.Errorf("%s: Secret %q with key %q is not in deploy/kubernetes", e.Name, ref.Name, ref.Key)
				}
				found = found || e.Name == "REFCAST_PUBLISH_TOKEN"
			case e.Name == "REFCAST_PUBLISH_TOKEN_FILE":
				if secretFiles[e.Value] == "" {
					t.Errorf("REFCAST_PUBLISH_TOKEN_FILE=%s is not a file mounted from a Secret (have %v)", e.Value, secretFiles)
				}
				found = true
			case e.Name == "REFCAST_PUBLISH_TOKEN":
				t.Error("REFCAST_PUBLISH_TOKEN is a literal in the Deployment; take it from the Secret")
			}
		}
		if !found {
			t.Error("the publish token does not come from a Secret")
		}
	})

	t.Run("service", func(t *testing.T) {
		for _, s := range objs.services {
			if !subset(s.Spec.Selector, pod.Metadata.Labels) {
				t.Errorf("service %s selector %v does not match the pods %v", s.Metadata.Name, s.Spec.Selector, pod.Metadata.Labels)
			}
			for _, p := range s.Spec.Ports {
				if resolvePort(p.TargetPort) != 8080 {
					t.Errorf("service %s targetPort %v does not reach 8080", s.Metadata.Name, p.TargetPort)
				}
			}
		}
	})

	t.Run("pdb", func(t *testing.T) {
		for _, p := range objs.pdbs {
			if !subset(p.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
				t.Errorf("pdb %s selector does not match the pods", p.Metadata.Name)
			}
		}
	})

	t.Run("kustomization", func(t *testing.T) {
		for _, f := range objs.files {
			if !slices.Contains(objs.resources, f) {
				t.Errorf("kustomization.yaml does not list %s", f)
			}
		}
		for _, r := range objs.resources {
			if !slices.Contains(objs.files, r) && !strings.Contains(r, "/") {
				t.Errorf("kustomization.yaml lists missing %s", r)
			}
		}
	})
}
