import nest, numpy as np, time
nest.set_verbosity('M_ERROR')
nest.ResetKernel(); nest.SetKernelStatus({'resolution':0.1,'local_num_threads':1,'rng_seed':5})
p=dict(C_m=250.,tau_m=20.,E_L=0.,V_th=20.,V_reset=10.,t_ref=2.,tau_syn_ex=.5,tau_syn_in=.5)
E=nest.Create('iaf_psc_exp',10000,params=p); I=nest.Create('iaf_psc_exp',2500,params=p)
for pop in (E,I): pop.V_m=nest.random.uniform(0.,20.)
pg=nest.Create('poisson_generator',params={'rate':20000.})
nest.Connect(pg,E+I,syn_spec={'weight':50.,'delay':0.1})
nest.Connect(E,E+I,{'rule':'fixed_indegree','indegree':1000},{'weight':50.,'delay':1.5})
nest.Connect(I,E+I,{'rule':'fixed_indegree','indegree':250},{'weight':-250.,'delay':1.5})
sr=nest.Create('spike_recorder'); nest.Connect(E,sr)
t=time.time(); nest.Simulate(1000.); print('sim s',time.time()-t)
ev=sr.events; ts=ev['times']; n=ev['senders']
print('rate E', len(ts)/10000)
m=ts>200; tt=ts[m]; nn=n[m]; o=np.lexsort((tt,nn)); tt=tt[o]; nn=nn[o]
cv=[]
for i in np.unique(nn)[:3000]:
    s=tt[nn==i]
    if len(s)>3: d=np.diff(s); cv.append(d.std()/d.mean())
print('CV',np.mean(cv))
for b in (1,5):
    h,_=np.histogram(tt,bins=np.arange(200,1000.01,b)); print(b,'ms pop cv',h.std()/h.mean())
